"""CLI responsiveness: `hpcnb --help`, `hpcnb list` over a 10,000-row store, import time."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from testbed import HPCNB, SRC, WORK, hpcnb_env


def wall_ms(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, env=env, stdin=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr[-300:]!r}")
    return times


def fill_store(state_dir: Path, rows: int) -> None:
    sys.path.insert(0, str(SRC))
    from hpcnb.store import SessionRecord, Store

    state_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with Store(state_dir / "sessions.db") as store:
        conn = store._db  # bulk insert in one transaction: add() commits per row
        cols = [f for f in SessionRecord.__dataclass_fields__]
        marks = ", ".join("?" * len(cols))
        records = [SessionRecord(
            cluster="local", job_id=str(100000 + i), name="hpcnb", scheduler="local", partition=None,
            tunnel="direct", submitted_at=now - 86400 - i, state="completed", node="localhost",
            time_left_s=None, updated_at=now - 86400, ended_at=now - 86400) for i in range(rows)]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(f"INSERT OR REPLACE INTO sessions ({', '.join(cols)}) VALUES ({marks})",
                         [tuple(getattr(r, c) for c in cols) for r in records])
        conn.execute("COMMIT")


LAST: dict[str, float] = {}


def measure() -> dict[str, float]:
    # An installed hpcnb has its bytecode (pip compiles it at install); this copy gets it here, as
    # a machine with PYTHONDONTWRITEBYTECODE=1 (this one) would otherwise compile every module on
    # every run (~35 ms of `list`'s time, measured 2026-12-01).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SRC / "hpcnb")], check=True,
                   capture_output=True)
    env = hpcnb_env(state_dir=WORK / "cli-state")
    py = HPCNB
    out: dict[str, float] = {}
    out["hpcnb --help (python -m hpcnb), median of 20, ms"] = statistics.median(
        wall_ms([*py, "--help"], env, 20))
    out["python -c pass (interpreter floor), median of 20, ms"] = statistics.median(
        wall_ms([sys.executable, "-c", "pass"], env, 20))
    state = WORK / "list-10k"
    fill_store(state, 10_000)
    env10k = hpcnb_env(state_dir=state)
    # Median of 15: one start of Python here varies by 2x from one second to the next (a shared VM).
    out["hpcnb list --cluster local (10,000 ended rows), median of 15, ms"] = statistics.median(
        wall_ms([*py, "list", "--cluster", "local"], env10k, 15))
    out["hpcnb list --all --cluster local (10,000 rows printed), median of 15, ms"] = statistics.median(
        wall_ms([*py, "list", "--all", "--cluster", "local"], env10k, 15))
    out["hpcnb list --all --json --cluster local (10,000 rows), median of 5, ms"] = statistics.median(
        wall_ms([*py, "list", "--all", "--json", "--cluster", "local"], env10k, 5))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import hpcnb.cli"],
                          capture_output=True, text=True, env=env)
    total_self = 0
    cum = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            total_self += int(m.group(1))
            if len(m.group(3)) == 1:  # top level imports
                cum[m.group(4)] = int(m.group(2))
    out["import hpcnb.cli: cumulative (importtime), ms"] = cum.get("hpcnb.cli", 0) / 1000
    out["import hpcnb.cli: all imports incl. site/encodings (sum of self), ms"] = total_self / 1000
    top = sorted(cum.items(), key=lambda kv: -kv[1])[:4]
    for name, us in top:
        if name != "hpcnb.cli":
            out[f"  top-level import {name}, ms"] = us / 1000
    LAST.update(out)
    return out
