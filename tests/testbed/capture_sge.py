#!/usr/bin/env python3
"""Capture real Grid Engine output from the testbed into tests/unit/captured/sge_*_testbed.txt.

    sudo flock /tmp/testbed.lock tests/testbed/capture_sge.py   # the testbed up; about 2 minutes

Every command runs as the testbed's user on login1's Grid Engine port, as hpcnb runs them (the
status and history queries are hpcnb's own argv). Each file holds a header (`## ` lines: the
command, its exit status and stderr; `## jobs:` names the jobs a file shows), a `## ---` line, then
the command's stdout exactly. tests/unit/test_sge.py parses them. At the end the qmaster is stopped
for the "controller down" texts and started again (tests/testbed/testbed/sge.py), which is why it
wants the testbed to itself.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

from fixtures import ssh  # noqa: E402
from testbed import sge, topology  # noqa: E402
from testbed.proc import read_pid, stop_pid  # noqa: E402

from hpcnb.schedulers import get_scheduler  # noqa: E402

CAPTURED = HERE.parent / "unit" / "captured"
USER = topology.USERS[0]
SCHED = get_scheduler("sge")
VERSION = "Son of Grid Engine 8.1.9 (Debian bookworm's gridengine packages)"


def run(command: str, stdin: str | None = None):
    return ssh(f"cd /tmp && {command}", port=topology.SGE_LOGIN_PORT, timeout=60, input=stdin)


def qsub(options: str, body: str = "sleep 300") -> str:
    """A job script on qsub's standard input, as hpcnb submits (#$ lines are options too)."""
    proc = run("qsub -terse", stdin=f"#!/bin/bash\n#$ -N hpcnb -o /dev/null -j y {options}\n{body}\n")
    if proc.returncode != 0:
        raise SystemExit(f"qsub {options}: {proc.stderr}")
    return proc.stdout.strip()


def status_command() -> str:
    return shlex.join(SCHED.status_argv(["1"], USER))


def states() -> dict[str, str]:
    return {j: s.raw_state for j, s in SCHED.parse_status(run(status_command()).stdout).items()}


def wait(job_id: str, wanted: str | None, timeout: float = 60) -> None:
    """Until qstat shows the job in state `wanted`, or (None) qacct has its record."""
    deadline = time.monotonic() + timeout
    while True:
        if wanted is None:
            if run(f"qacct -j {job_id}").returncode == 0:
                return
        elif states().get(job_id) == wanted:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{job_id} never reached {wanted or 'qacct'}: {states()}")
        time.sleep(0.5)


def capture(name: str, command: str, what: str, jobs: str = "", stdin: str | None = None) -> None:
    proc = run(command, stdin=stdin)
    stderr = proc.stderr.strip().replace("\n", " | ") or "(none)"
    header = (f"## {VERSION}, the hpcnb testbed (tests/testbed/capture_sge.py), "
              f"{time.strftime('%Y-%m-%d')}: {what}\n"
              + (f"## jobs: {jobs}\n" if jobs else "")
              + f"## command: {command}\n## exit: {proc.returncode}\n## stderr: {stderr}\n## ---\n")
    path = CAPTURED / f"sge_{name}_testbed.txt"
    path.write_text(header + proc.stdout)
    print(f"{path.name}: exit {proc.returncode}")


def capture_queue() -> list[str]:
    """Running, waiting, held and error-state jobs in one status query; returns their ids."""
    gpus = qsub("-l h_rt=00:10:00,gpu=2")                      # both of node02's GPUs
    wait(gpus, "r")
    smp = qsub("-l h_rt=00:20:00,h_vmem=2G -pe smp 4")          # 4 slots on one host
    waiting = qsub("-l h_rt=00:05:00,gpu=1")                   # waits for a GPU
    held = qsub("-h -l h_rt=00:05:00")
    error = qsub("-l h_rt=00:05:00", body="exit 100")          # fact 7: error state Eqw
    wait(smp, "r")
    wait(error, "Eqw")
    time.sleep(2)
    jobs = f"gpus={gpus} smp={smp} waiting={waiting} held={held} error={error}"
    capture("status_queue", status_command(), "hpcnb's status query: running, waiting, held and "
            "error-state jobs", jobs)
    capture("qsub_terse", "qsub -terse", "hpcnb's submission: a script on stdin",
            stdin="#!/bin/bash\n#$ -N hpcnb -l h_rt=00:01:00 -o /dev/null -j y\ntrue\n")
    capture("qconf_sql", "qconf -sql", "the queue names (hpcnb doctor)")
    return [gpus, smp, waiting, held, error]


def capture_history(queue: list[str]) -> None:
    """qacct of jobs that ended each way, in one history query as hpcnb asks."""
    gpus, smp, waiting, held, error = queue
    run(f"qdel {waiting} {held} {error}")                      # deleted before they ran
    run(f"qdel {gpus}")                                        # deleted while running
    completed = qsub("-l h_rt=00:01:00", body="true")
    failed = qsub("-l h_rt=00:01:00", body="echo oops >&2; exit 3")
    hrt = qsub("-l h_rt=00:00:05", body="sleep 60")            # fact 8: killed at its h_rt
    for job_id in (gpus, completed, failed, hrt):
        wait(job_id, None, timeout=90)
    run(f"qdel {smp}")
    wait(smp, None)
    ids = [completed, failed, hrt, gpus, smp, waiting]
    jobs = (f"completed={completed} failed={failed} hrt={hrt} deleted_running={gpus} "
            f"deleted_running_smp={smp} deleted_queued={waiting}")
    capture("history", shlex.join(SCHED.history_argv(ids) or []), "hpcnb's history query (qacct "
            "-j per job): completed, failed, h_rt-killed, deleted running and queued", jobs)
    capture("status_ended", status_command(), "hpcnb's status query when every job has ended")
    capture("qstat_j_unknown", "qstat -j 999999", "qstat -j of a job the cell never had")
    capture("qdel_unknown", "qdel 999999", "qdel of a job the cell never had")
    capture("qacct_unknown", "qacct -j 999999", "qacct of a job the cell never had")


def capture_controller_down() -> None:
    """The client texts while sge_qmaster does not run; then it is started again."""
    pid = read_pid("sge_qmaster")
    if pid is None:
        raise SystemExit("sge_qmaster does not run: `cluster up` first")
    stop_pid(pid, grace=30)
    try:
        capture("status_controller_down", status_command(), "hpcnb's status query, qmaster stopped")
        capture("qdel_controller_down", "qdel 1", "qdel, qmaster stopped")
        capture("qsub_controller_down", "qsub -terse", "qsub, qmaster stopped",
                stdin="#!/bin/bash\ntrue\n")
    finally:
        sge.up()


def main() -> None:
    capture_history(capture_queue())
    capture_controller_down()


if __name__ == "__main__":
    main()
