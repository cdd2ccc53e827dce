"""The kept connection (hpcnb.keeper) on the testbed: what one login per route buys.

1. Throughput of the 256 MiB download through the tunnel the keeper serves (`hpcnb attach`,
   persist on, the default), through hpcnb's in-process tunnel (the same attach with persist = "no")
   and through OpenSSH `ssh -L` via login1, on the same job (`testbed`, direct), interleaved.
2. Time to the first remote result: `Cluster(name).remote.run(["true"])` in one Python process, from
   Cluster creation to the result, with a keeper (after a warm-up that started it) and without (a
   full SSH login each time); and the whole `hpcnb list` with one seeded running session.
3. Codes a day's work asks for through the gateway (publickey + TOTP; the testbed's TOTP askpass
   logs each prompt): submit, list, attach, logs, detach, attach again, one forced drop of the
   login connection (the gateway's sshd serving it is killed), list, cancel; with the keeper and
   with persist = "no".

The persist = "no" variants use a derived config (tests/hpcnb_driver.py) with the same cluster names,
so the job's session folder on the cluster is the same one.
"""

from __future__ import annotations

import http.client
import importlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import http_load as hl
import testbed as tb

Add = Callable[..., None]
Ratio = Callable[[str, float, str, bool], None]

TTFR = """\
import json, sys, time
from hpcnb import Cluster
name, n = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(n + 1):  # the first is the warm-up (imports; with persist on it starts the keeper)
    t = time.perf_counter()
    cluster = Cluster(name)
    result = cluster.remote.run(["true"])
    times.append(time.perf_counter() - t)
    assert result.exit_status == 0, result
    cluster.close()
print(json.dumps(times))
"""


def _test_helpers() -> tuple:
    """tests/testbed/fixtures.py and tests/hpcnb_driver.py. fixtures imports the testbed package
    `testbed`, a name bench/testbed.py holds here: swapped out for the import only."""
    ours = sys.modules.pop("testbed")
    added = [str(tb.ROOT / "tests" / "testbed"), str(tb.ROOT / "tests"), str(tb.SRC)]
    sys.path[:0] = added
    try:
        fixtures = importlib.import_module("fixtures")
        driver = importlib.import_module("hpcnb_driver")
    finally:
        for name in [m for m in sys.modules if m == "testbed" or m.startswith("testbed.")]:
            sys.modules.pop(name)
        sys.modules["testbed"] = ours
        for path in added[:2]:
            sys.path.remove(path)
    return fixtures, driver


def _spread(values: list[float], fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def _get_status(port: int, token: str, timeout: float = 30) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/api/status", headers={"Authorization": f"token {token}"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
    finally:
        conn.close()


def _kill(pids: list[int]) -> None:
    for pid in pids:
        subprocess.run(["pkill", "-KILL", "-P", str(pid)], capture_output=True, check=False)
        subprocess.run(["kill", "-KILL", str(pid)], capture_output=True, check=False)


class KeeperBench:
    def __init__(self, runs: int, add: Add, ratio: Ratio) -> None:
        self.runs, self.add, self.ratio = runs, add, ratio
        self.fixtures, driver = _test_helpers()
        self.nokeep_config = driver.derived_config(tb.WORK / "hpcnb-nokeeper.toml", tb.CONFIG, {
            "testbed": ("testbed", {"persist": "no"}), "testbed-jump": ("testbed-jump", {"persist": "no"})})
        self.env = {"keeper": tb.hpcnb_env(), "persist = no": tb.hpcnb_env(self.nokeep_config)}

    def run(self) -> None:
        self.throughput()
        self.first_result()
        for variant in self.env:
            self.day(variant)

    # --- 1 -----------------------------------------------------------------------------------------
    def throughput(self) -> None:
        tb.log("keeper: throughput, keeper tunnel vs in-process tunnel vs ssh -L")
        since = time.time()
        job = tb.submit_no_attach("testbed", env=self.env["keeper"])
        try:
            hs = tb.wait_fresh_handshake(job.job_id, since, cluster="testbed")
            kept = tb.Attach("testbed", job.job_id, env=self.env["keeper"])
            inproc = tb.Attach("testbed", job.job_id, env=self.env["persist = no"])
            try:
                with tb.openssh_forward("direct", hs) as ossh:
                    ports = {"keeper tunnel": kept.port, "in-process tunnel (persist = no)": inproc.port,
                             "OpenSSH ssh -L": ossh}
                    urls = {k: f"http://127.0.0.1:{p}/files/{hl.BIG_FILE}" for k, p in ports.items()}
                    for url in urls.values():
                        hl.curl_download(url, hs["token"])  # warm: page cache, windows
                    mbs: dict[str, list[float]] = {k: [] for k in urls}
                    for _ in range(self.runs):  # interleaved: the machine drifts
                        for name, url in urls.items():
                            mbs[name].append(hl.curl_download(url, hs["token"]))
            finally:
                inproc.close()
                kept.close()
        finally:
            tb.cancel(job.job_id)
        for name, runs in mbs.items():
            self.add("keeper", f"throughput direct: {name}, MB/s median of {self.runs} (min-max)",
                     _spread(runs))
        ossh = statistics.median(mbs["OpenSSH ssh -L"])
        r = statistics.median(mbs["keeper tunnel"]) / ossh
        self.ratio("throughput direct: keeper tunnel / OpenSSH", r, ">= 0.8", r >= 0.8)
        r2 = statistics.median(mbs["in-process tunnel (persist = no)"]) / ossh
        self.add("keeper", "throughput direct: in-process tunnel (persist = no) / OpenSSH", r2, "{:.2f}")

    # --- 2 -----------------------------------------------------------------------------------------
    def first_result(self) -> None:
        n = max(2 * self.runs, 6)
        secs: dict[str, list[float]] = {}
        for variant, env in self.env.items():
            tb.log(f"keeper: time to first remote result, {variant}")
            proc = subprocess.run([*tb.HPCNB[:-2], "-c", TTFR, "testbed", str(n)], capture_output=True,
                                  text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                raise RuntimeError(f"Cluster('testbed').remote.run, {variant}: {proc.stderr[-800:]}")
            times = json.loads(proc.stdout)
            secs[variant] = times[1:]
            self.add("keeper", f"first remote result, Cluster() to run(['true']) done, {variant}: "
                     f"s median of {n} (min-max; warm-up)",
                     f"{_spread(times[1:], '{:.3f}')}; {times[0]:.3f}")
        kept = statistics.median(secs["keeper"])
        self.ratio("first remote result with the keeper, s (median)", kept, "<= 0.2", kept <= 0.2)
        self.add("keeper", "first remote result: persist = no / keeper",
                 statistics.median(secs["persist = no"]) / kept, "{:.1f}")

        state = tb.WORK / "keeper-list"
        state.mkdir(exist_ok=True)
        for variant, env in self.env.items():
            env = {**env, "HPCNB_STATE_DIR": str(state)}
            walls = []
            for _ in range(self.runs + 1):
                self.fixtures.seed_session(state, "testbed")  # list may mark it ended: again each time
                t = time.perf_counter()
                proc = tb.hpcnb("list", "--cluster", "testbed", env=env)
                walls.append(time.perf_counter() - t)
                if proc.returncode != 0:
                    raise RuntimeError(f"list, {variant}: {proc.stderr}")
            self.add("keeper", f"hpcnb list (1 seeded running session), {variant}: wall s median of "
                     f"{self.runs} (min-max)", _spread(walls[1:], "{:.3f}"))

    # --- 3 -----------------------------------------------------------------------------------------
    def day(self, variant: str) -> None:
        tb.log(f"keeper: a day's work through the gateway (TOTP), {variant}")
        folder = tb.WORK / f"day-{variant.split()[0]}"
        folder.mkdir(exist_ok=True)
        env = {**self.env[variant], "HPCNB_STATE_DIR": str(folder / "state"),
               **self.fixtures.gateway_env(folder)}
        cluster = "testbed-jump"
        walls: list[tuple[str, float]] = []
        asked: list[int] = []

        def cli(*args: str) -> subprocess.CompletedProcess:
            t = time.perf_counter()
            proc = tb.hpcnb(*args, "--cluster", cluster, env=env)
            walls.append((args[0], time.perf_counter() - t))
            asked.append(len(self.fixtures.prompts(folder)))
            if proc.returncode != 0:
                raise RuntimeError(f"hpcnb {' '.join(args)} ({variant}) exited {proc.returncode}: "
                                   f"{proc.stderr}")
            return proc

        def attach() -> tb.Attach:
            t = time.perf_counter()
            a = tb.Attach(cluster, job_id, env=env)
            _get_status(a.port, a.token)
            walls.append(("attach", time.perf_counter() - t))
            asked.append(len(self.fixtures.prompts(folder)))
            return a

        t = time.perf_counter()
        job_id = tb.submit_no_attach(cluster, "--hours", "0.5", env=env).job_id
        walls.append(("submit", time.perf_counter() - t))
        asked.append(len(self.fixtures.prompts(folder)))
        try:
            cli("list")
            attach().close()
            cli("logs", job_id)
            a = attach()
            try:
                if variant == "keeper":
                    found = json.loads(tb.hpcnb("connections", "--json", env=env).stdout)
                    pids = [k["pid"] for k in found if k["cluster"] == cluster]
                else:
                    pids = [a.proc.pid]
                topo = self.fixtures.topology
                _kill(self.fixtures.sshd_pids_serving(pids, topo.GATEWAY, topo.GATEWAY_LAPTOP_ADDR))
                t = time.perf_counter()
                deadline = time.monotonic() + 90
                while True:  # the browser's next request: a new login, the same local port
                    try:
                        _get_status(a.port, a.token)
                        break
                    except OSError:
                        if time.monotonic() > deadline or a.proc.poll() is not None:
                            raise RuntimeError(f"no answer after the drop: {''.join(a.stderr)}") from None
                        time.sleep(0.5)
                walls.append(("after the drop, first answer", time.perf_counter() - t))
                asked.append(len(self.fixtures.prompts(folder)))
            finally:
                a.close()
            cli("list")
            cli("cancel", job_id)
            tb.JOBS.discard(job_id)
        finally:
            if job_id in tb.JOBS:
                tb.cancel(job_id)
        codes = asked[-1]
        steps = ", ".join(f"{what} {s:.2f}" for what, s in walls)
        per = " ".join(str(b - a) for a, b in zip([0, *asked], asked, strict=False))
        self.add("keeper", f"day's work via gateway, {variant}: codes asked (per step)", f"{codes} ({per})")
        self.add("keeper", f"day's work via gateway, {variant}: wall s per step", steps)
        if variant == "keeper":
            self.ratio("codes for a day's work with the keeper", codes, "2", codes == 2)
        else:
            expected = len(walls)  # one per command, plus the one after the drop
            self.add("keeper", "day's work via gateway, persist = no: codes expected (one a command "
                     "+ the reconnect)", expected, "{:d}")


def measure(runs: int, add: Add, ratio: Ratio) -> None:
    KeeperBench(runs, add, ratio).run()
