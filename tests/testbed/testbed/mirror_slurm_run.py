"""Running Slurm site mirrors (the files and commands are mirror_slurm.py's): a private slurmctld per
site in login1's network namespace, with the testbed's munge and slurmdbd, brought up a wave at a
time (mirror_slurm.waves) and removed afterwards, also after a failure.

    with MirrorPool(mirrors.load_all("slurm")) as pool:
        proc = pool.get("perlmutter").test_only(script)   # sbatch --test-only, as the user
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .mirror_slurm import (
    MIRROR_MARK,
    USER,
    cluster_name,
    job_submit_lua,
    sacctmgr_setup,
    sacctmgr_teardown,
    sacctmgr_user,
    slurm_conf,
    waves,
)
from .mirrors import Mirror, MirrorError
from .proc import TestbedError, in_host
from .topology import LOGIN, SLURM_CONF


def in_login(argv: list[str]) -> list[str]:
    """argv in login1's network namespace (where slurmdbd and the mirrors' slurmctlds listen)."""
    return ["nsenter", f"--net=/run/netns/{LOGIN.name}", *argv]


def run(argv: list[str], conf: Path = SLURM_CONF, *, input: str | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout, cwd="/tmp",
                          env={**os.environ, "SLURM_CONF": str(conf)})


def evidence(proc: subprocess.CompletedProcess[str]) -> str:
    """The command, its exit status and what it said: for every error."""
    said = (proc.stderr + proc.stdout).strip()[-2000:]
    return f"`{' '.join(map(str, proc.args))}` exited {proc.returncode}: {said}"


def sacctmgr(lines: list[str]) -> str:
    """sacctmgr commands in one run (stdin, -i: no questions). It goes on after a failed command and
    may still exit 0, so its output is the verdict as well: an 'error' or 'problem' fails it."""
    proc = run(in_login(["sacctmgr", "-i"]), input="".join(f"{line}\n" for line in lines))
    if proc.returncode != 0 or re.search(r"error|problem", proc.stdout + proc.stderr, re.IGNORECASE):
        raise TestbedError(f"sacctmgr {lines!r}: {evidence(proc)}")
    return proc.stdout


def show(what: str, fields: str) -> list[list[str]]:
    proc = run(in_login(["sacctmgr", "-n", "-P", "show", what, f"format={fields}"]))
    if proc.returncode != 0:
        raise TestbedError(evidence(proc))
    return [line.split("|") for line in proc.stdout.splitlines() if line.strip()]


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on in login1's namespace: the kernel's picks, all bound at once so they
    differ."""
    code = ("import socket, sys\nsocks = [socket.socket() for _ in range(int(sys.argv[1]))]\n"
            "for s in socks: s.bind(('127.0.0.1', 0))\nprint(*[s.getsockname()[1] for s in socks])")
    proc = run(in_login(["python3", "-c", code, str(count)]))
    if proc.returncode != 0:
        raise TestbedError(evidence(proc))
    return [int(p) for p in proc.stdout.split()]


FOLDER_PREFIX = "hpcnb-mirror-"


def stop_stale() -> None:
    """The slurmctlds of a run that crashed (their temporary folders are still there): each is
    killed by the pid it wrote, and only if that process still runs that folder's slurm.conf.
    Call it holding mirrors.mirror_lock, when no mirror of this run is up."""
    for pid_file in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*/slurmctld.pid"):
        folder = pid_file.parent
        try:
            pid = int(pid_file.read_text().strip())
            running = str(folder / "slurm.conf").encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            running = False
        if running:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


class SlurmMirror:
    """One site's slurmctld (its accounting is the Fleet's); `test_only(script)` asks it."""

    def __init__(self, mirror: Mirror, port: int) -> None:
        if mirror.scheduler != "slurm" or not mirror.accounts:
            raise MirrorError(f"{mirror.path}: a Slurm mirror needs accounts")
        self.mirror = mirror
        self.folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{mirror.site}-"))
        self.folder.chmod(0o755)  # the user's sbatch reads slurm.conf
        self.conf = self.folder / "slurm.conf"
        self.conf.write_text(slurm_conf(mirror, self.folder, port))
        if mirror.rules:
            (self.folder / "job_submit.lua").write_text(job_submit_lua(mirror))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.folder / "slurmctld.out").open("wb") as log:
            self.proc = subprocess.Popen(
                in_host(LOGIN, ["slurmctld", "-D", "-i", "-f", str(self.conf)]), stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True,
                env={**os.environ, "SLURM_CONF": str(self.conf)})

    def wait_ready(self, timeout: float = 240) -> None:
        """Up, and holding the user's associations from slurmdbd (without them it refuses every job).
        A wave's slurmctlds start together: on a busy 2-core machine (CI) that took over 60 s."""
        deadline = time.monotonic() + timeout
        argv = in_login(["scontrol", "show", "assoc_mgr", f"users={USER}", "flags=assoc"])
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise TestbedError(f"the {self.mirror.site} mirror's slurmctld exited {code}: "
                                   + self.log_tail())
            try:
                if f"UserName={USER}" in run(argv, self.conf, timeout=30).stdout:
                    return
            except subprocess.TimeoutExpired:
                pass  # slurmctld still starting: ask again
            time.sleep(0.2)
        raise TestbedError(f"the {self.mirror.site} mirror's slurmctld was not ready in {timeout:.0f} s: "
                           + self.log_tail())

    def log_tail(self) -> str:
        texts = [f"{p.name}: {p.read_text(errors='replace')[-1500:]}"
                 for p in (self.folder / "slurmctld.out", self.folder / "slurmctld.log") if p.exists()]
        return "\n".join(texts) or "(no log)"

    def test_only(self, script: str) -> subprocess.CompletedProcess[str]:
        """`sbatch --test-only` of the script, as the testbed's user, against this mirror."""
        argv = in_login(["runuser", "-u", USER, "--", "env", f"SLURM_CONF={self.conf}",
                         "sbatch", "--test-only"])
        return run(argv, self.conf, input=script)

    def stop(self) -> None:
        """Kill the slurmctld we started (by its pid: a throwaway, nothing of its state is kept)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.folder, ignore_errors=True)


class Fleet:
    """The mirrors of one wave (no shared QOS name), up together: accounting made in parallel (one
    sacctmgr run per site), slurmctlds started together; all of it removed on exit."""

    def __init__(self, mirrors: list[Mirror]) -> None:
        self.mirrors = mirrors
        self.live: dict[str, SlurmMirror] = {}
        self.made = False

    def _clean(self) -> None:
        """Remove the wave's clusters, accounts and mirror QOS, as far as they exist (on entry: what
        a crashed run left). A QOS of the same name that is not a mirror's stops everything."""
        qos = {name: desc for name, desc in show("qos", "name,description")}
        wanted = {q.name for m in self.mirrors for q in m.qos}
        foreign = sorted(n for n in wanted & set(qos) if qos[n] != MIRROR_MARK)
        if foreign:
            raise TestbedError(f"QOS {foreign} exist in slurmdbd and are not a mirror's: not touching them")
        clusters = {c for (c,) in show("cluster", "cluster")} & {cluster_name(m) for m in self.mirrors}
        accounts = {a for (a,) in show("account", "account")} \
            & {a.lower() for m in self.mirrors for a in m.accounts}  # slurmdbd lower-cases them
        lines = sacctmgr_teardown(clusters, accounts, wanted & set(qos))
        if lines:
            sacctmgr(lines)

    def check_users(self) -> None:
        """Every mirror's cluster has the test user's associations (else its slurmctld refuses
        every job, and its readiness wait would time out with no word of why)."""
        rows = run(in_login(["sacctmgr", "-n", "-P", "show", "assoc", "format=cluster",
                             "where", f"user={USER}"]))
        have = set(rows.stdout.split())
        missing = sorted(m.site for m in self.mirrors if cluster_name(m) not in have)
        if rows.returncode != 0 or missing:
            raise TestbedError(f"no association of {USER} in the mirrors of {missing}: {evidence(rows)}")

    def __enter__(self) -> Fleet:
        try:
            self._clean()
            self.made = True
            ports = free_ports(len(self.mirrors))
            with ThreadPoolExecutor(max_workers=len(self.mirrors)) as pool:
                list(pool.map(lambda m: sacctmgr(sacctmgr_setup(m)), self.mirrors))
                for mirror in self.mirrors:
                    sacctmgr([sacctmgr_user(mirror)])
                self.check_users()
                for mirror, port in zip(self.mirrors, ports, strict=True):
                    self.live[mirror.site] = SlurmMirror(mirror, port)
                    self.live[mirror.site].start()
                list(pool.map(lambda s: s.wait_ready(), self.live.values()))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for mirror in self.live.values():
            mirror.stop()
        self.live.clear()
        if self.made:
            self.made = False
            self._clean()


class MirrorPool:
    """The Slurm mirrors a test run asks for, a wave at a time: `get(site)` brings up that site's
    wave (after taking the previous one down). Ask in wave order (`order()`) to bring each up once.
    Use it holding mirrors.mirror_lock (slurmdbd's QOS and accounts are shared by every run)."""

    def __init__(self, mirrors: list[Mirror]) -> None:
        self.waves = waves(mirrors)
        self.fleet: Fleet | None = None

    def order(self) -> list[Mirror]:
        return [m for wave in self.waves for m in wave]

    def get(self, site: str) -> SlurmMirror:
        if self.fleet is None or site not in self.fleet.live:
            self.close()
            wave = next((w for w in self.waves if site in {m.site for m in w}), None)
            if wave is None:
                raise MirrorError(f"no Slurm mirror of {site!r}")
            fleet = Fleet(wave)
            self.fleet = fleet.__enter__()
        return self.fleet.live[site]

    def close(self) -> None:
        if self.fleet is not None:
            fleet, self.fleet = self.fleet, None
            fleet.__exit__()

    def __enter__(self) -> MirrorPool:
        stop_stale()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
