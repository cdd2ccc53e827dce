"""The bench's view of the testbed: OpenSSH through a temp config, hpcnb subprocesses, jobs.

Everything talks to loopback or 10.213.x.x only. Every job submitted here is recorded in `JOBS`
and cancelled by `cancel_all()` (run.py calls it in a finally).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TB = Path("/var/tmp/hpcnb-testbed")
CLIENT = TB / "client"
KEY = CLIENT / "id_ed25519_hpcuser"
KNOWN_HOSTS = CLIENT / "known_hosts"
SLURM_CONF = TB / "etc" / "slurm.conf"
LOGIN = "10.213.0.2"
USER = "hpcuser"
CONFIG = ROOT / "tests" / "testbed" / "hpcnb.toml"
MODES = {"testbed": "direct", "testbed-node-ssh": "node-ssh", "testbed-socket": "socket"}
URL_RE = re.compile(r"^http://127\.0\.0\.1:(\d+)/lab\?token=(\S+)$")

WORK = Path(tempfile.mkdtemp(prefix="hpcnb-bench-"))
STATE_DIR = WORK / "state"
# The bench's own keepers (hpcnb.keeper; persist is on by default): a short private folder (a unix
# socket path has ~100 bytes), ended by stop_keepers() at the end of every run.
RUNTIME_DIR = Path(tempfile.mkdtemp(prefix="hb-k-", dir="/tmp"))
atexit.register(shutil.rmtree, RUNTIME_DIR, ignore_errors=True)
# hpcnb as committed (HEAD), with the working tree's tunnel.py (what the bench tunes) on top: the
# working tree is shared with engineers mid-edit. `python -P` keeps the cwd off sys.path.
SRC = WORK / "src"
HPCNB = [sys.executable, "-P", "-m", "hpcnb"]


def snapshot(ref: str = "HEAD", overlay: tuple[str, ...] = ("hpcnb/tunnel.py",),
             patches: tuple[Path, ...] = ()) -> str:
    """hpcnb at `ref` in SRC, the working tree's `overlay` files on top, then each of `patches` (a
    `git diff` of a change proposed for a file the bench does not own, measured before it is made)."""
    SRC.mkdir(exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "hpcnb", "templates", "site-configs"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(SRC)], input=archive, check=True)
    for rel in overlay:
        (SRC / rel).write_bytes((ROOT / rel).read_bytes())
    for patch in patches:
        subprocess.run(["git", "apply", "--unsafe-paths", f"--directory={SRC.relative_to('/')}",
                        str(Path(patch).resolve())], cwd="/", check=True)
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True,
                          text=True, check=True).stdout.strip()
JOBS: set[str] = set()  # every job id this run submitted (all on the Slurm testbed)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_up() -> None:
    status = subprocess.run([str(ROOT / "tests/testbed/cluster"), "status"], capture_output=True, text=True)
    if "slurmctld        running" in status.stdout and "venv             ready" in status.stdout:
        return
    log("testbed not up: tests/testbed/cluster up")
    subprocess.run([str(ROOT / "tests/testbed/cluster"), "up"], check=True, timeout=900)


# --- OpenSSH, through one temp config (-F applies to the -J hop too; -o options would not) ---------
SSH_CONFIG = WORK / "ssh_config"


def write_ssh_config(key: Path = KEY) -> Path:
    common = (f"  User {USER}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
              f"  UserKnownHostsFile {KNOWN_HOSTS}\n  GlobalKnownHostsFile /dev/null\n"
              "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 5\n"
              "  ControlMaster no\n  ControlPath none\n")
    SSH_CONFIG.write_text(f"Host login1\n  HostName {LOGIN}\n{common}"
                          f"Host node01 node02\n  ProxyJump login1\n{common}")
    SSH_CONFIG.chmod(0o600)
    return SSH_CONFIG


def ssh_base() -> list[str]:
    return ["ssh", "-F", str(SSH_CONFIG)]


def login_run(command: str, timeout: float = 60, check: bool = True) -> str:
    """Run a shell command on login1 as hpcuser (OpenSSH); its stdout."""
    proc = subprocess.run([*ssh_base(), "login1", command], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ssh login1 {command!r} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def in_login_ns(argv: list[str]) -> list[str]:
    """argv run in login1's network namespace as root (for `no tunnel` ceilings and scontrol)."""
    return ["nsenter", "--net=/run/netns/login1", "env", f"SLURM_CONF={SLURM_CONF}", *argv]


def scontrol(*args: str) -> str:
    return subprocess.run(in_login_ns(["scontrol", *args]), capture_output=True, text=True,
                          check=True, timeout=30).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.02)


# The pid of the `ssh -N -L` serving each local port openssh_forward yields (while it is open).
FORWARD_PIDS: dict[int, int] = {}


@contextmanager
def openssh_forward(mode: str, hs: dict) -> Iterator[int]:
    """`ssh -N -L` as the OpenSSH peer of an hpcnb tunnel mode; yields the local port (its pid:
    FORWARD_PIDS[port])."""
    port = free_port()
    if mode == "direct":
        argv = [*ssh_base(), "-N", "-L", f"127.0.0.1:{port}:{hs['host']}:{hs['port']}", "login1"]
    elif mode == "node-ssh":
        argv = [*ssh_base(), "-N", "-L", f"127.0.0.1:{port}:127.0.0.1:{hs['port']}", hs["node"]]
    else:
        argv = [*ssh_base(), "-N", "-L", f"127.0.0.1:{port}:{hs['socket']}", hs["node"]]
    argv[3:3] = ["-o", "ExitOnForwardFailure=yes"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    FORWARD_PIDS[port] = proc.pid
    try:
        wait_port(port, proc)
        yield port
    finally:
        FORWARD_PIDS.pop(port, None)
        proc.terminate()
        proc.wait(10)


# --- CPU time of the laptop side's processes --------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on; the name in parentheses may hold spaces."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def descendants(pids: list[int]) -> list[int]:
    """pids and every live process below them (e.g. the `ssh -W` that ssh -J runs for its hop)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                parent[int(entry.name)] = int(fields[1])
    found, todo = set(pids), list(pids)
    while todo:
        p = todo.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime (all threads) of each of pids and their live descendants, in seconds."""
    out = {}
    for pid in descendants(pids):
        fields = _stat_fields(pid)
        if fields:  # utime, stime: fields 14, 15 of stat(5)
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two cpu_seconds() readings (a process new in `after` counts whole)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


# --- hpcnb as a user runs it ----------------------------------------------------------------------
def hpcnb_env(config: Path = CONFIG, state_dir: Path = STATE_DIR) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HPCNB_CLUSTER", "XDG_CONFIG_HOME", "XDG_STATE_HOME")}
    env.update(HPCNB_CONFIG=str(config), HPCNB_STATE_DIR=str(state_dir), NO_COLOR="1",
               PYTHONPATH=str(SRC), HPCNB_RUNTIME_DIR=str(RUNTIME_DIR))
    return env


def keeper_pids() -> list[int]:
    """The bench's live keepers, as their info files in RUNTIME_DIR record them."""
    pids = []
    for info in RUNTIME_DIR.glob("*.json"):
        try:
            pid = int(json.loads(info.read_text())["pid"])
            os.kill(pid, 0)
        except (OSError, ValueError, KeyError):
            continue
        pids.append(pid)
    return pids


def keeper_serving(port: int, env: dict[str, str] | None = None) -> int | None:
    """The pid of the bench's keeper that serves the tunnel on local `port` (`hpcnb connections
    --json`), None if none does (the attach process itself then carries the tunnel)."""
    proc = hpcnb("connections", "--json", env=env, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"hpcnb connections --json: {proc.stderr}")
    for found in json.loads(proc.stdout or "[]"):
        if any(t.get("port") == port for t in found.get("tunnels", [])):
            return int(found["pid"])
    return None


def master_pids() -> list[int]:
    """The bench's live OpenSSH ControlMasters (hpcnb.openssh): their sockets are in RUNTIME_DIR."""
    out = subprocess.run(["pgrep", "-f", f"ControlPath={RUNTIME_DIR}/"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def stop_masters() -> None:
    """SIGTERM to any ControlMaster of the bench's (`hpcnb logout --all` ends those that answer)."""
    subprocess.run(["pkill", "-f", f"ControlPath={RUNTIME_DIR}/"], capture_output=True, check=False)


def stop_keepers() -> None:
    """`hpcnb logout --all`, then SIGTERM (and SIGKILL) to any keeper of the bench's still alive, and
    to any ControlMaster of the bench's (the openssh backend)."""
    hpcnb("logout", "--all", timeout=60)
    stop_masters()
    pids = keeper_pids()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = [p for p in pids if Path(f"/proc/{p}").exists()]
    shutil.rmtree(RUNTIME_DIR, ignore_errors=True)


def hpcnb(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*HPCNB, *args], capture_output=True, text=True,
                          env=env or hpcnb_env(), timeout=timeout, stdin=subprocess.DEVNULL)


def sessions_dir(cluster: str = "testbed") -> str:
    """A job's session folders on the cluster (hpcnb/handshake.py: per machine, here the cluster's
    own name: the testbed's clusters extend no site config)."""
    return f".hpcnb/sessions/{cluster}"


def read_handshake(job_id: str, cluster: str = "testbed") -> dict | None:
    out = login_run(f"cat {sessions_dir(cluster)}/{job_id}/connection.json 2>/dev/null || true")
    return json.loads(out) if out.strip() else None


def move_stale_sessions() -> int:
    """Session dirs left by an earlier testbed incarnation, for job ids this slurmctld has not
    given out yet, hold a stale connection.json/ended that a new job with the same id would be
    mistaken for (see the bench report). Move them aside (not delete) under ~/.hpcnb/stale-*/."""
    script = r"""
max=$(sacct -a -X -n -P -o JobID -S 2000-01-01 2>/dev/null | grep -Eo '^[0-9]+' | sort -n | tail -1)
max=${max:-0}; born=$(stat -c %Y /var/tmp/hpcnb-testbed/etc/slurm.conf 2>/dev/null || echo 0)
n=0; dest=.hpcnb/stale-moved-by-bench-$(date +%s)
for d in .hpcnb/sessions/*/*/; do
  id=$(basename "$d"); case $id in *[!0-9]*) continue;; esac
  [ "$id" -gt "$max" ] || continue
  f=$d/connection.json; [ -e "$f" ] || f=$d/job.log
  [ "$(stat -c %Y "$f")" -lt "$born" ] || continue
  mkdir -p "$dest" && mv "$d" "$dest/" && n=$((n+1))
done
echo $n
"""
    return int(login_run(script).strip() or 0)


@dataclass
class Submitted:
    cluster: str
    job_id: str
    lines: list[tuple[float, str]] = field(default_factory=list)


def submit_no_attach(cluster: str, *extra: str, env: dict[str, str] | None = None) -> Submitted:
    proc = hpcnb("submit", "--cluster", cluster, "--no-browser", "--no-attach", *extra, env=env)
    match = re.search(r"submitted job (\d+)", proc.stderr)
    if match:
        JOBS.add(match.group(1))
    if proc.returncode != 0:
        raise RuntimeError(f"hpcnb submit --cluster {cluster} exited {proc.returncode}: {proc.stderr}")
    job_id = proc.stdout.strip().splitlines()[-1]
    JOBS.add(job_id)
    return Submitted(cluster, job_id)


def wait_fresh_handshake(job_id: str, since: float, timeout: float = 180,
                         cluster: str = "testbed") -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hs = read_handshake(job_id, cluster)
        if hs and hs.get("started", 0) >= since - 5:
            return hs
        time.sleep(1)
    raise RuntimeError(f"job {job_id}: no fresh connection.json in {timeout} s")


class Attach:
    """`hpcnb attach` in the background; the URL it printed."""

    def __init__(self, cluster: str, job_id: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*HPCNB, "attach", job_id, "--cluster", cluster, "--no-browser"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or hpcnb_env(),
            stdin=subprocess.DEVNULL)
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(120)
        match = URL_RE.match(got[0].strip()) if got else None
        if not match:
            self.close()
            raise RuntimeError(f"attach {job_id} printed no URL: {''.join(self.stderr)}")
        self.port, self.token = int(match.group(1)), match.group(2)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cancel(job_id: str) -> None:
    """scancel, again while slurmctld does not answer (other engineers' fault tests restart it:
    a job whose scancel was lost once came back requeued after a node failure, for minutes)."""
    for attempt in range(10):
        proc = subprocess.run(in_login_ns(["scancel", job_id]), capture_output=True, text=True, timeout=30)
        if proc.returncode == 0 or "completed" in proc.stderr or "Invalid job id" in proc.stderr:
            break
        if attempt == 9:
            log(f"could not cancel job {job_id}: {proc.stderr.strip()}; cancel it by hand")
        time.sleep(3)
    JOBS.discard(job_id)


def cancel_all() -> None:
    for job_id in sorted(JOBS):
        cancel(job_id)
