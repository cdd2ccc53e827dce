"""The two SSH backends side by side on the testbed: paramiko (the default, its login held by a
keeper) and openssh (`ssh_backend = "openssh"`: the system ssh rides one ControlMaster).

1. Throughput of the 256 MiB download (bench/keeper.py's method) through the paramiko backend's
   tunnel (`hpcnb attach`, persist on: the keeper's), the openssh backend's (`hpcnb attach`: `ssh -O
   forward` on hpcnb's master) and plain OpenSSH `ssh -L` via login1, on one job (direct), all three
   open at once, runs interleaved. The openssh attach uses a derived config whose cluster `testbed`
   is a copy of `testbed-openssh` (tests/hpcnb_driver.py), so the job's session folder is the same.
2. Time to the first remote result: `Cluster(name).remote.run(["true"])` in one Python process, from
   Cluster creation to the result, `testbed` (paramiko) and `testbed-openssh`: warm (the keeper /
   master already up) and cold (`hpcnb logout --cluster NAME`, untimed, before each sample: a full
   login, for paramiko with the keeper's start). A cold sample counts only if the process holding
   the login (keeper, master) is a new one. Plain `ssh login1 true` (no master) for reference.

The keepers and masters live in the bench's private HPCNB_RUNTIME_DIR; `hpcnb logout --all` and
testbed.stop_masters() end them at the end, also on errors.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time

import http_load as hl
import keeper as kp
import testbed as tb

OPENSSH_AS_TESTBED = "openssh backend: ssh -O forward on hpcnb's master"
PARAMIKO = "paramiko backend: keeper tunnel"
SSH_L = "OpenSSH ssh -L"
CLUSTERS = {"paramiko": "testbed", "openssh": "testbed-openssh"}

TTFR = """\
import glob, json, os, re, subprocess, sys, time
from hpcnb import Cluster
name, n, cold = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "cold"

def holder(cluster):
    # The process holding the login: the master's pid (ssh -O check), else the keepers' pids.
    r = cluster.remote
    if type(r).__name__ == "OpenSSHRemote":
        out = subprocess.run([r.ssh, "-O", "check", *r.options, "--", r.host], capture_output=True,
                             text=True, stdin=subprocess.DEVNULL).stderr
        found = re.search(r"pid=(\\d+)", out)
        return found.group(1) if found else None
    pids = []
    for info in glob.glob(os.path.join(os.environ["HPCNB_RUNTIME_DIR"], "*.json")):
        try:
            with open(info) as f:
                pid = int(json.load(f)["pid"])
            os.kill(pid, 0)
        except (OSError, ValueError, KeyError):
            continue
        pids.append(str(pid))
    return ",".join(sorted(pids)) or None

times, holders = [], []
for i in range(n + 1):  # the first is the warm-up (imports; it starts the keeper / master)
    if cold and i:
        out = subprocess.run([sys.executable, "-P", "-m", "hpcnb", "logout", "--cluster", name],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert out.returncode == 0 and "no kept connection" not in out.stderr, out.stderr
    t = time.perf_counter()
    cluster = Cluster(name)
    result = cluster.remote.run(["true"])
    times.append(time.perf_counter() - t)
    assert result.exit_status == 0, result
    holders.append(holder(cluster))
    cluster.close()
print(json.dumps({"times": times, "holders": holders}))
"""


class BackendsBench:
    def __init__(self, runs: int, add: kp.Add, ratio: kp.Ratio) -> None:
        self.runs, self.add, self.ratio = runs, add, ratio
        _, driver = kp._test_helpers()
        config = driver.derived_config(tb.WORK / "hpcnb-openssh-as-testbed.toml", tb.CONFIG,
                                       {"testbed": ("testbed-openssh", {})})
        self.env = {"paramiko": tb.hpcnb_env(), "openssh": tb.hpcnb_env(), "openssh as testbed":
                    tb.hpcnb_env(config)}

    def run(self) -> None:
        try:
            self.throughput()
            self.first_result()
        finally:
            tb.hpcnb("logout", "--all", env=self.env["paramiko"], timeout=60)
            tb.stop_masters()

    # --- 1 -----------------------------------------------------------------------------------------
    def throughput(self) -> None:
        tb.log("backends: throughput, paramiko (keeper) vs openssh (master) vs ssh -L")
        since = time.time()
        job = tb.submit_no_attach("testbed", env=self.env["paramiko"])
        try:
            hs = tb.wait_fresh_handshake(job.job_id, since, cluster="testbed")
            kept = tb.Attach("testbed", job.job_id, env=self.env["paramiko"])
            ossh_backend = None
            try:
                ossh_backend = tb.Attach("testbed", job.job_id, env=self.env["openssh as testbed"])
                if not tb.master_pids():
                    raise RuntimeError("the openssh attach started no master in the runtime folder")
                if not tb.keeper_pids():
                    raise RuntimeError("the paramiko attach runs through no keeper")
                with tb.openssh_forward("direct", hs) as ossh:
                    ports = {PARAMIKO: kept.port, OPENSSH_AS_TESTBED: ossh_backend.port, SSH_L: ossh}
                    urls = {k: f"http://127.0.0.1:{p}/files/{hl.BIG_FILE}" for k, p in ports.items()}
                    for url in urls.values():
                        hl.curl_download(url, hs["token"])  # warm: page cache, windows
                    mbs: dict[str, list[float]] = {k: [] for k in urls}
                    for _ in range(self.runs):  # interleaved: the machine drifts
                        for name, url in urls.items():
                            mbs[name].append(hl.curl_download(url, hs["token"]))
            finally:
                if ossh_backend is not None:
                    ossh_backend.close()
                kept.close()
        finally:
            tb.cancel(job.job_id)
        for name, runs in mbs.items():
            self.add("backends", f"throughput direct: {name}, MB/s median of {self.runs} (min-max)",
                     kp._spread(runs))
        ref = statistics.median(mbs[SSH_L])
        for label, name in (("openssh backend", OPENSSH_AS_TESTBED), ("paramiko backend", PARAMIKO)):
            r = statistics.median(mbs[name]) / ref
            self.ratio(f"throughput direct: {label} / OpenSSH ssh -L", r, ">= 0.8", r >= 0.8)

    # --- 2 -----------------------------------------------------------------------------------------
    def first_result(self) -> None:
        n = max(2 * self.runs, 6)
        med: dict[tuple[str, str], float] = {}
        for backend, cluster in CLUSTERS.items():
            for temp in ("warm", "cold"):
                tb.log(f"backends: time to first remote result, {backend} ({cluster}), {temp}")
                proc = subprocess.run([*tb.HPCNB[:-2], "-c", TTFR, cluster, str(n), temp],
                                      capture_output=True, text=True, env=self.env[backend],
                                      timeout=600, stdin=subprocess.DEVNULL)
                if proc.returncode != 0:
                    raise RuntimeError(f"Cluster({cluster!r}).remote.run, {temp}: {proc.stderr[-800:]}")
                out = json.loads(proc.stdout)
                times, holders = out["times"], out["holders"]
                if None in holders:
                    raise RuntimeError(f"{cluster}, {temp}: no keeper/master after a command: {holders}")
                if temp == "warm" and len(set(holders)) != 1:
                    raise RuntimeError(f"{cluster}, warm: the login changed hands: {holders}")
                if temp == "cold" and len(set(holders)) != len(holders):
                    raise RuntimeError(f"{cluster}, cold: a sample reused a login: {holders}")
                med[backend, temp] = statistics.median(times[1:])
                self.add("backends", f"first remote result, {backend} ({cluster}), {temp}: s median of "
                         f"{n} (min-max; warm-up)", f"{kp._spread(times[1:], '{:.3f}')}; {times[0]:.3f}")
        for backend in CLUSTERS:
            warm = med[backend, "warm"]
            self.ratio(f"first remote result, warm, {backend} backend, s (median)", warm, "<= 0.2",
                       warm <= 0.2)
        for temp in ("warm", "cold"):
            self.add("backends", f"first remote result, {temp}: openssh / paramiko",
                     med["openssh", temp] / med["paramiko", temp], "{:.2f}")
        walls = []
        for _ in range(n + 1):
            t = time.perf_counter()
            tb.login_run("true")
            walls.append(time.perf_counter() - t)
        self.add("backends", f"reference: `ssh login1 true` (a login each, no master), s median of {n} "
                 "(min-max)", kp._spread(walls[1:], "{:.3f}"))


def measure(runs: int, add: kp.Add, ratio: kp.Ratio) -> None:
    BackendsBench(runs, add, ratio).run()
