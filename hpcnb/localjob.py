"""The `local` scheduler's daemon side: run a job script as a detached process on this machine.

    python -m hpcnb.localjob submit            script on stdin; prints the job id
    python -m hpcnb.localjob status [ID ...]   one JSON object per line (see local.py)
    python -m hpcnb.localjob cancel ID
    python -m hpcnb.localjob supervise ID      internal: started detached by `submit`

Each job lives in ~/.hpcnb/local/jobs/<id>/ (0700): script.sh, output.log, state.json (written
atomically: tmp + os.replace), and a `cancel` file when cancelled. Ids are small integers taken
by creating that directory (mkdir is atomic: two submits never get the same id). A supervisor
process in its own session runs `bash script.sh` in another session, enforces the walltime
(from the script's `# hpcnb-walltime-seconds: N` line) by SIGTERM then SIGKILL to the job's
process group, and records the final state. Both outlive the hpcnb process that submitted.
This is the only module of hpcnb that writes to stdout outside the CLI: it IS a small CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

WALLTIME_RE = re.compile(r"^#\s*hpcnb-walltime-seconds:\s*(\d+)\s*$", re.MULTILINE)
POLL_S = 0.2
KILL_GRACE_S = float(os.environ.get("HPCNB_LOCAL_KILL_GRACE", "5"))   # SIGTERM -> SIGKILL
UNKNOWN_JOB = "unknown job id"   # local.py's is_unknown_job_error matches this text
EXIT_UNKNOWN = 1
FINAL = ("completed", "failed", "cancelled", "timeout")


def jobs_root() -> Path:
    return Path.home() / ".hpcnb" / "local" / "jobs"


def _write_private(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)


def _open_log(path: Path) -> BinaryIO:
    """Append-open a 0600 file (job output can hold a token or a path the user keeps private)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")


def write_state(job_dir: Path, state: dict[str, Any]) -> None:
    tmp = job_dir / f".state.{os.getpid()}.tmp"
    _write_private(tmp, json.dumps(state))
    tmp.replace(job_dir / "state.json")


def read_state(job_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((job_dir / "state.json").read_text())
    except FileNotFoundError:
        return None


def allocate(root: Path) -> tuple[str, Path]:
    """Take the next free integer id by creating its directory (O_EXCL semantics)."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()]
    n = max(taken, default=0) + 1
    while True:
        job_dir = root / str(n)
        try:
            job_dir.mkdir(mode=0o700)
        except FileExistsError:
            n += 1
            continue
        return str(n), job_dir


def _pythonpath() -> str:
    # The supervisor must import this package even when it is not installed (a checkout).
    here = str(Path(__file__).resolve().parent.parent)
    old = os.environ.get("PYTHONPATH")
    return here if not old else f"{here}{os.pathsep}{old}"


def submit(script: str) -> str:
    m = WALLTIME_RE.search(script)
    job_id, job_dir = allocate(jobs_root())
    _write_private(job_dir / "script.sh", script)
    write_state(job_dir, {
        "job_id": job_id, "state": "pending", "submitted": time.time(),
        "walltime_s": int(m.group(1)) if m else None, "name": _job_name(script),
    })
    with open(os.devnull, "rb") as null_in, _open_log(job_dir / "supervisor.log") as log:
        subprocess.Popen(
            [sys.executable, "-m", "hpcnb.localjob", "supervise", job_id],
            stdin=null_in, stdout=log, stderr=log, cwd=str(Path.home()),
            env={**os.environ, "PYTHONPATH": _pythonpath()},
            start_new_session=True, close_fds=True,
        )
    return job_id


def _job_name(script: str) -> str | None:
    m = re.search(r"^#\s*hpcnb-job-name:\s*(\S.*?)\s*$", script, re.MULTILINE)
    return m.group(1) if m else None


class _Cancelled(Exception):
    pass


def supervise(job_id: str) -> int:
    job_dir = jobs_root() / job_id
    state = read_state(job_dir)
    if state is None:
        return EXIT_UNKNOWN

    def on_term(signum: int, frame: object) -> None:
        raise _Cancelled

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    state["supervisor_pid"] = os.getpid()
    if (job_dir / "cancel").exists():
        write_state(job_dir, {**state, "state": "cancelled", "ended": time.time()})
        return 0
    env = {**os.environ, "HPCNB_JOB_ID": job_id}
    if state.get("walltime_s"):
        env["HPCNB_WALLTIME_S"] = str(state["walltime_s"])
    with open(os.devnull, "rb") as null_in, _open_log(job_dir / "output.log") as out:
        proc = subprocess.Popen(
            ["bash", str(job_dir / "script.sh")], stdin=null_in, stdout=out,
            stderr=subprocess.STDOUT, cwd=str(Path.home()), env=env,
            start_new_session=True, close_fds=True,
        )
    started = time.time()
    state.update(state="running", started=started, pid=proc.pid, node="localhost")
    write_state(job_dir, state)
    final = _wait(proc, job_dir, started, state.get("walltime_s"))
    code = proc.returncode
    if final is None:
        final = "completed" if code == 0 else "failed"
    exit_code = str(code) if code is not None and code >= 0 else f"signal {-(code or 0)}"
    write_state(job_dir, {**state, "state": final, "ended": time.time(), "exit_code": exit_code})
    return 0


def _wait(proc: subprocess.Popen[bytes], job_dir: Path, started: float,
          walltime_s: int | None) -> str | None:
    """Wait for the script; None if it ended by itself, else 'cancelled' / 'timeout'."""
    try:
        while proc.poll() is None:
            if (job_dir / "cancel").exists():
                _stop(proc)
                return "cancelled"
            if walltime_s and time.time() - started >= walltime_s:
                _stop(proc)
                return "timeout"
            time.sleep(POLL_S)
    except _Cancelled:
        _stop(proc)
        return "cancelled"
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the job's process group (the job may clean up), SIGKILL after the grace."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a second cancel must not interrupt this
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=KILL_GRACE_S)
            if sig == signal.SIGTERM:
                # The leader exited; children it left in the group still get the SIGKILL.
                _kill_quietly(proc.pid)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _kill_quietly(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status_record(job_id: str) -> dict[str, Any] | None:
    job_dir = jobs_root() / job_id
    state = read_state(job_dir)
    if state is None:
        return None
    now = time.time()
    if state["state"] == "running" and not _alive(state.get("supervisor_pid")):
        again = read_state(job_dir) or state   # it may have just written the final state
        if again["state"] == "running":
            again = {**again, "state": "failed", "reason": "supervisor vanished (reboot?)"}
        state = again
    if state["state"] == "pending" and now - state.get("submitted", now) > 30:
        state = {**state, "reason": "supervisor did not start; see supervisor.log"}
    wall = state.get("walltime_s")
    left = None
    if wall and state["state"] == "running":
        left = max(int(wall - (now - state["started"])), 0)
    elif wall and state["state"] == "pending":
        left = int(wall)
    return {
        "job_id": job_id, "state": state["state"], "name": state.get("name"),
        "node": state.get("node"), "time_left_s": left, "exit_code": state.get("exit_code"),
        "reason": state.get("reason"),
    }


def status(ids: list[str]) -> int:
    root = jobs_root()
    if not ids:
        ids = sorted((p.name for p in root.iterdir() if p.name.isdigit()), key=int) \
            if root.is_dir() else []
        if not ids:
            return 0
    found = 0
    for job_id in ids:
        rec = status_record(job_id) if job_id.isdigit() else None
        if rec is None:
            print(f"hpcnb.localjob: {UNKNOWN_JOB} {job_id}", file=sys.stderr)
            continue
        found += 1
        print(json.dumps(rec))
    return 0 if found else EXIT_UNKNOWN


def cancel(job_id: str) -> int:
    job_dir = jobs_root() / job_id
    state = read_state(job_dir) if job_id.isdigit() else None
    if state is None:
        print(f"hpcnb.localjob: {UNKNOWN_JOB} {job_id}", file=sys.stderr)
        return EXIT_UNKNOWN
    if state["state"] in FINAL:
        return 0   # like scancel of an ended job: nothing to do
    _write_private(job_dir / "cancel", str(time.time()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in {"submit", "status", "cancel", "supervise"}:
        print("usage: python -m hpcnb.localjob submit|status [ID...]|cancel ID", file=sys.stderr)
        return 2
    cmd, rest = args[0], args[1:]
    if cmd == "submit":
        print(submit(sys.stdin.read()))
        return 0
    if cmd == "status":
        return status(rest)
    if len(rest) != 1:
        print(f"usage: python -m hpcnb.localjob {cmd} ID", file=sys.stderr)
        return 2
    return cancel(rest[0]) if cmd == "cancel" else supervise(rest[0])


if __name__ == "__main__":
    sys.exit(main())
