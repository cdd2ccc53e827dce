#!/usr/bin/env python3
"""Capture real OpenPBS output from the testbed into tests/unit/captured/openpbs_*.txt.

    sudo tests/testbed/capture_openpbs.py      # the testbed up; takes about a minute

Every command runs as the testbed's user on login1's OpenPBS port, as hpcnb runs them. Each file
holds a header (`## ` lines: the command, its exit status and stderr), a `## ---` line, then the
command's stdout exactly. tests/unit/test_pbs.py parses them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fixtures import ssh  # noqa: E402
from testbed import topology  # noqa: E402

CAPTURED = HERE.parent / "unit" / "captured"
SERVER = topology.LOGIN.name


def run(command: str):
    return ssh(f"cd /tmp && {command}", port=topology.PBS_LOGIN_PORT, timeout=60)


def qsub(args: str) -> str:
    proc = run(f"qsub -N hpcnb {args}")
    if proc.returncode != 0:
        raise SystemExit(f"qsub {args}: {proc.stderr}")
    return proc.stdout.strip()


def state(job_id: str) -> str:
    out = run(f"qstat -x -f {job_id}").stdout
    return next((ln.split("=", 1)[1].strip() for ln in out.splitlines()
                 if ln.strip().startswith("job_state =")), "")


def wait(job_id: str, wanted: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while state(job_id) != wanted:
        if time.monotonic() > deadline:
            raise SystemExit(f"{job_id} never reached {wanted}")
        time.sleep(0.5)


def capture(name: str, command: str, what: str) -> None:
    proc = run(command)
    stderr = proc.stderr.strip().replace("\n", " | ") or "(none)"
    header = (f"## OpenPBS 23.06.06 (cd7ab5e), the hpcnb testbed (tests/testbed/capture_openpbs.py), "
              f"{time.strftime('%Y-%m-%d')}: {what}\n"
              f"## command: {command}\n## exit: {proc.returncode}\n## stderr: {stderr}\n## ---\n")
    path = CAPTURED / f"openpbs_{name}.txt"
    path.write_text(header + proc.stdout)
    print(f"{path.name}: exit {proc.returncode}")


def main() -> None:
    # Two jobs fill both nodes (8 ncpus each), so the third waits with the scheduler's comment.
    running = [qsub(f"-l select=1:ncpus=8 -l walltime=00:10:00 -- /bin/sleep {s}") for s in (300, 301)]
    for job_id in running:
        wait(job_id, "R")
    queued = qsub("-l select=1:ncpus=8 -l walltime=00:05:00 -- /bin/sleep 3")
    held = qsub("-h -l walltime=00:05:00 -- /bin/sleep 1")
    array = qsub("-J 1-3 -l select=1:ncpus=1 -l walltime=00:05:00 -- /bin/sleep 3")
    time.sleep(8)  # a scheduling cycle: the queued job's comment, the MoM's resources_used
    capture("qstat_f_running", f"qstat -f {running[0]}", "a running job")
    capture("qstat_f_queued", f"qstat -f {queued}", "queued behind two jobs that fill the nodes")
    capture("qstat_f_held", f"qstat -f {held}", "a job held at submission (qsub -h)")
    capture("qstat_f_array", f"qstat -f {array}", "an array job (qsub -J 1-3), queued")
    capture("qstat_f_active", f"qstat -f {running[0]} {queued} {held}",
            "three jobs in one query, as hpcnb asks")
    run(f"qdel {running[0]}")
    wait(running[0], "F")
    capture("qstat_xf_deleted", f"qstat -x -f {running[0]}", "history: a running job deleted (qdel)")
    run(f"qdel {held}")
    wait(held, "F")
    capture("qstat_xf_deleted_held", f"qstat -x -f {held}", "history: a held job deleted")
    finished = qsub("-l walltime=00:01:00 -- /bin/true")
    failed = qsub("-l walltime=00:01:00 -- /bin/sh -c 'echo oops >&2; exit 3'")
    for job_id in (finished, failed, queued):
        wait(job_id, "F")
    capture("qstat_xf_finished", f"qstat -x -f {finished}", "history: a job that exited 0")
    capture("qstat_xf_failed", f"qstat -x -f {failed}", "history: a job that exited 3")
    capture("qstat_f_finished", f"qstat -f {finished}", "a finished job without -x")
    capture("qstat_f_running_and_finished", f"qstat -f {running[1]} {finished}",
            "a running and a finished job in one query, without -x")
    capture("qstat_f_unknown", f"qstat -f 999999.{SERVER}", "a job id the server never had")
    run(f"qdel {running[1]}")
    wait(array, "F")
    capture("qstat_xf_array", f"qstat -x -f {array}", "history: the array job, all subjobs done")


if __name__ == "__main__":
    main()
