"""hpcnb's end-to-end bench on the testbed (needs root; run by hand, never from the tests).

    python bench/run.py [--quick] [--skip SECTION ...]

Brings the testbed up if needed, submits its own jobs (and cancels each one), and prints ONE table:
the ratios against the targets first, then every figure. Progress goes to stderr. Sections:
tunnel (throughput, cold load, latency per tunnel mode vs OpenSSH and no tunnel), ttn (time to
notebook, jupyter-forward), sched (scheduler queries and SSH handshakes per command), cli,
keeper (the kept connection: its tunnel's throughput, time to a first remote result, codes a day's
work asks for through the TOTP gateway; bench/keeper.py), backends (the paramiko and openssh SSH
backends side by side: tunnel throughput vs ssh -L, time to a first remote result warm and cold;
bench/backends.py).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backends
import cli_speed
import http_load as hl
import keeper
import testbed as tb
import ttn
from sched_load import CountingKey

Row = tuple[str, str, str]  # section, metric, value
ROWS: list[Row] = []
RATIOS: list[tuple[str, float, str, bool]] = []  # metric, value, target, met


def add(section: str, metric: str, value: float | str, fmt: str = "{:.1f}") -> None:
    ROWS.append((section, metric, value if isinstance(value, str) else fmt.format(value)))


def ratio(metric: str, value: float, target: str, met: bool) -> None:
    RATIOS.append((metric, value, target, met))


def counting_config(key: Path) -> Path:
    text = tb.CONFIG.read_text().replace(str(tb.KEY), str(key))
    path = tb.WORK / "hpcnb-count.toml"
    path.write_text(text)
    return path


class Bench:
    def __init__(self, runs: int, lat_n: int, ttn_runs: int, counter: CountingKey) -> None:
        self.runs, self.lat_n, self.ttn_runs = runs, lat_n, ttn_runs
        self.counter = counter
        self.env = tb.hpcnb_env(counting_config(counter.key))

    def record_handshakes(self, label: str, marks: dict[str, int]) -> None:
        time.sleep(0.3)  # sshd writes its log line asynchronously
        counts = self.counter.handshakes_since(marks)
        text = ", ".join(f"{h} {n}" for h, n in counts.items() if n) or "none"
        add("ssh", f"SSH handshakes, {label}", text)

    # --- 1-3: per tunnel mode ---------------------------------------------------------------------
    def tunnel_mode(self, cluster: str, mode: str) -> None:
        tb.move_stale_sessions()
        since = time.time()
        self.counter.ensure()
        marks = self.counter.log_marks()
        job = tb.submit_no_attach(cluster, env=self.env)
        self.record_handshakes(f"submit --no-attach ({mode})", marks)
        try:
            hs = tb.wait_fresh_handshake(job.job_id, since, cluster=cluster)
            token = hs["token"]
            self.counter.ensure()
            marks = self.counter.log_marks()
            tb.Attach(cluster, job.job_id, env=self.env).close()  # counted, then the measured one
            self.record_handshakes(f"attach ({mode}), URL then Ctrl-C", marks)
            attach = tb.Attach(cluster, job.job_id)
            try:
                with tb.openssh_forward(mode, hs) as ossh:
                    self.paths(mode, hs, token, {"hpcnb": attach.port, "OpenSSH": ossh})
            finally:
                attach.close()
        finally:
            tb.cancel(job.job_id)

    def paths(self, mode: str, hs: dict, token: str, ports: dict[str, int]) -> None:
        tb.log(f"{mode}: throughput")
        mbs: dict[str, float] = {}
        for name, port in ports.items():
            runs = hl.throughput(f"http://127.0.0.1:{port}/files/{hl.BIG_FILE}", token, self.runs)
            mbs[name] = statistics.median(runs)
            add("throughput", f"{mode}: {name}, MB/s median of {self.runs} (min-max)",
                f"{mbs[name]:.0f} ({min(runs):.0f}-{max(runs):.0f})")
        if mode == "direct":
            url, prefix = f"http://{hs['host']}:{hs['port']}/files/{hl.BIG_FILE}", tb.in_login_ns([])
        elif mode == "node-ssh":
            url = f"http://127.0.0.1:{hs['port']}/files/{hl.BIG_FILE}"
            prefix = ["nsenter", f"--net=/run/netns/{hs['node']}"]
        else:
            url = f"http://localhost/files/{hl.BIG_FILE}"
            prefix = ["nsenter", f"--net=/run/netns/{hs['node']}", "env", "--"]
        if mode == "socket":
            prefix = [*prefix, "curl", "--unix-socket", hs["socket"]]
            runs = [self._curl_socket(prefix, url, token) for _ in range(self.runs + 1)][1:]
        else:
            runs = hl.throughput(url, token, self.runs, prefix)
        where = {"direct": "login1 -> node address", "node-ssh": "on the node, loopback",
                 "socket": "on the node, unix socket"}[mode]
        add("throughput", f"{mode}: no tunnel ({where}), MB/s median (min-max)",
            f"{statistics.median(runs):.0f} ({min(runs):.0f}-{max(runs):.0f})")
        r = mbs["hpcnb"] / mbs["OpenSSH"]
        ratio(f"throughput {mode}: hpcnb / OpenSSH", r, ">= 0.8", r >= 0.8)

        tb.log(f"{mode}: JupyterLab cold load")
        waves = hl.lab_assets(ports["hpcnb"], token)
        secs: dict[str, float] = {}
        for name, port in ports.items():
            hl.cold_load(port, token, waves)  # warm the server's caches once per path
            runs = [hl.cold_load(port, token, waves) for _ in range(self.runs)]
            secs[name] = statistics.median(r[0] for r in runs)
            n, size = runs[0][1], runs[0][2]
            add("cold load", f"{mode}: {name}, s median of {self.runs} ({n} requests, {size / 1e6:.1f} MB)",
                secs[name], "{:.3f}")
        r = secs["hpcnb"] / secs["OpenSSH"]
        ratio(f"JupyterLab cold load {mode}: hpcnb / OpenSSH", r, "<= 1.1", r <= 1.1)

        tb.log(f"{mode}: latency")
        kernel = hl.start_kernel(ports["hpcnb"], token)
        try:
            med: dict[str, tuple[float, float]] = {}
            for name, port in ports.items():
                st = hl.status_latency(port, token, self.lat_n)
                kt = hl.kernel_latency(port, token, kernel, self.lat_n)
                med[name] = (statistics.median(st), statistics.median(kt))
                add("latency", f"{mode}: {name}, GET /api/status x{self.lat_n}, ms median / p99",
                    f"{statistics.median(st):.2f} / {hl.p99(st):.2f}")
                add("latency", f"{mode}: {name}, kernel execute `1` x{self.lat_n}, ms median / p99",
                    f"{statistics.median(kt):.2f} / {hl.p99(kt):.2f}")
        finally:
            hl.delete_kernel(ports["hpcnb"], token, kernel)
        for i, what in enumerate(("GET /api/status", "kernel round trip")):
            r = med["hpcnb"][i] / med["OpenSSH"][i]
            ratio(f"median latency {what} {mode}: hpcnb / OpenSSH", r, "<= 1.2", r <= 1.2)

    @staticmethod
    def _curl_socket(prefix: list[str], url: str, token: str) -> float:
        import subprocess

        out = subprocess.run([*prefix, "-sS", "-o", "/dev/null", "-H", f"Authorization: token {token}",
                              "-w", "%{size_download} %{time_total}", url],
                             capture_output=True, text=True, check=True, timeout=300).stdout.split()
        return int(out[0]) / float(out[1]) / 1e6

    # --- 4: time to notebook ------------------------------------------------------------------------
    def time_to_notebook(self) -> None:
        results: list[dict[str, float]] = []
        for i in range(self.ttn_runs):
            tb.log(f"time to notebook, run {i + 1}/{self.ttn_runs}")
            tb.move_stale_sessions()
            results.append(ttn.one_submit("testbed"))
        for key in results[0]:
            values = [r[key] for r in results]
            add("time to notebook", f"{key}, s median of {len(values)} (max)",
                f"{statistics.median(values):.2f} ({max(values):.2f})")
        lag = statistics.median(r["Jupyter answering to URL printed"] for r in results)
        ratio("tunnel up after Jupyter answers, s (connection.json started -> URL)", lag, "<= 0.5",
              lag <= 0.5)
        tb.log("jupyter-forward")
        what, took = ttn.jupyter_forward()
        add("time to notebook", "jupyter-forward (--launch-command srun ...): outcome", what or "-")
        if took is not None:
            add("time to notebook", "jupyter-forward: start to its forward, s (+3 s fixed sleep)",
                took, "{:.2f}")

    # --- 5: scheduler load --------------------------------------------------------------------------
    def scheduler_load(self) -> None:
        import subprocess
        import threading

        tb.log("scheduler load: submit held for 60 s")
        tb.move_stale_sessions()
        self.counter.ensure()
        self.counter.hold_sbatch(True)
        self.counter.reset()
        marks = self.counter.log_marks()
        proc = subprocess.Popen([*tb.HPCNB, "submit", "--cluster", "testbed",
                                 "--no-browser", "--no-attach"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env, stdin=subprocess.DEVNULL)
        lines: list[tuple[float, str]] = []
        threading.Thread(target=lambda: lines.extend((time.time(), ln) for ln in proc.stderr),
                         daemon=True).start()
        job_id = None
        deadline = time.time() + 30
        while job_id is None and time.time() < deadline:
            job_id = next((ln.split()[2] for _, ln in list(lines) if ln.startswith("submitted job")), None)
            time.sleep(0.1)
        self.counter.hold_sbatch(False)
        if job_id is None:
            proc.kill()
            raise RuntimeError("held submit printed no job id")
        tb.JOBS.add(job_id)
        t_sub = time.time()
        time.sleep(max(0.0, 60 - (time.time() - t_sub)))
        tb.scontrol("release", job_id)
        t_rel = time.time()
        proc.communicate(timeout=180)
        tb.cancel(job_id)
        calls = self.counter.calls()
        pend = [c for t, c in calls if t <= t_rel and c.split()[0] in ("squeue", "sacct")]
        add("sched", "submit held 60 s: squeue+sacct while pending (60 s)", len(pend), "{:d}")
        add("sched", "submit held 60 s: all scheduler commands", ", ".join(c.split()[0] for _, c in calls))
        ratio("scheduler queries per minute while pending", len(pend), "<= 4", len(pend) <= 4)
        self.record_handshakes("submit --no-attach (held 60 s)", marks)

        tb.log("scheduler load: list with 50 sessions")
        ids = tb.login_run("for i in $(seq 50); do sbatch --parsable --hold -p debug -t 5 -J bench-list "
                           "--wrap 'sleep 1'; done").split()
        tb.JOBS.update(ids)
        state = tb.WORK / "list50"
        env = {**self.env, "HPCNB_STATE_DIR": str(state)}
        sys.path.insert(0, str(tb.SRC))
        from hpcnb.store import SessionRecord, Store
        state.mkdir(exist_ok=True)
        with Store(state / "sessions.db") as store:
            now = time.time()
            for jid in ids:
                store.add(SessionRecord(cluster="testbed", job_id=jid, name="bench-list", scheduler="slurm",
                                        partition="debug", tunnel="direct", submitted_at=now, state="pending",
                                        node=None, time_left_s=300, updated_at=now))
        for label in ("50 pending", "50 just cancelled"):
            self.counter.ensure()
            self.counter.reset()
            marks = self.counter.log_marks()
            t = time.perf_counter()
            proc2 = tb.hpcnb("list", "--cluster", "testbed", env=env)
            wall = time.perf_counter() - t
            if proc2.returncode != 0:
                raise RuntimeError(f"list: {proc2.stderr}")
            calls = self.counter.calls()
            add("sched", f"list, {label}: scheduler commands (wall s)",
                f"{len(calls)}: {' + '.join(c.split()[0] for _, c in calls)} ({wall:.2f})")
            if label == "50 pending":
                ratio("scheduler queries per `list` (50 pending)", len(calls), "1", len(calls) <= 1)
            self.record_handshakes(f"list ({label})", marks)
            if label == "50 pending":
                for jid in ids:
                    tb.cancel(jid)


def print_table() -> None:
    width = max(len(m) for _, m, _ in ROWS + [("", r[0], "") for r in RATIOS]) + 2
    print(f"{'':<18}{'metric':<{width}}value")
    print("-" * (width + 40))
    for metric, value, target, met in RATIOS:
        print(f"{'RATIO/TARGET':<18}{metric:<{width}}{value:.2f}   target {target}   "
              f"{'ok' if met else 'MISSED'}")
    print("-" * (width + 40))
    for section, metric, value in ROWS:
        print(f"{section:<18}{metric:<{width}}{value}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 runs, 50 round trips, 1 time-to-notebook")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["tunnel", "ttn", "sched", "cli", "keeper", "backends"])
    ap.add_argument("--modes", nargs="*", default=list(tb.MODES))
    ap.add_argument("--ref", default="HEAD", help="git ref of hpcnb to measure [HEAD]")
    args = ap.parse_args()
    runs, lat_n, ttn_runs = (3, 50, 1) if args.quick else (5, 200, 3)
    tb.ensure_up()
    rev = tb.snapshot(args.ref)
    tb.log(f"hpcnb from git {args.ref} ({rev}) + working tree hpcnb/tunnel.py, in {tb.SRC}")
    add("setup", "hpcnb under test", f"git {rev} + working-tree tunnel.py")
    tb.write_ssh_config()
    tb.log(f"work dir {tb.WORK}; moved {tb.move_stale_sessions()} stale session dirs aside")
    tb.login_run(f"[ \"$(stat -c %s {hl.BIG_FILE} 2>/dev/null)\" = {hl.BIG_BYTES} ] || "
                 f"head -c {hl.BIG_BYTES} /dev/urandom > {hl.BIG_FILE}")
    counter = CountingKey()
    counter.install()
    try:
        bench = Bench(runs, lat_n, ttn_runs, counter)
        if "tunnel" not in args.skip:
            for cluster in args.modes:
                bench.tunnel_mode(cluster, tb.MODES[cluster])
        if "ttn" not in args.skip:
            bench.time_to_notebook()
        if "sched" not in args.skip:
            bench.scheduler_load()
        if "cli" not in args.skip:
            tb.log("CLI responsiveness")
            for metric, value in cli_speed.measure().items():
                add("cli", metric, value)
            helpms = next(v for k, v in cli_speed.LAST.items() if "--help" in k)
            ratio("hpcnb --help, ms", helpms, "< 150", helpms < 150)
        if "keeper" not in args.skip:
            keeper.measure(runs, add, ratio)
        if "backends" not in args.skip:
            backends.measure(runs, add, ratio)
    finally:
        counter.remove()
        tb.cancel_all()
        tb.stop_keepers()  # the tunnel section's keepers too (persist is on by default)
        tb.login_run(f"rm -f {hl.BIG_FILE}", check=False)
    print_table()


if __name__ == "__main__":
    main()
