"""hpcnb on the testbed's real OpenPBS 23.06 (issue 11): what differs from Slurm and from Slurm's
torque wrappers. The common flow (submit, attach, kernel, list, cancel) is in test_e2e.py.

Real PBS ids name the server (12.login1); `qstat -f` shows resources_used.walltime, so time left is
known for a running job; ended jobs leave `qstat` (exit 35, "Job has finished") and are read from
`qstat -x`, where substate 91 tells a deleted job from a finished one (src/include/job.h).
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from fixtures import ssh
from hpcnb_driver import Hpcnb, derived_config, walltime_warning_then_end
from testbed import topology

from hpcnb.schedulers import JobState, get_scheduler
from hpcnb.schedulers.pbs import EXIT_FINISHED_JOB, EXIT_UNKNOWN_JOB, parse_qstat_full

pytestmark = pytest.mark.cluster

CLUSTER = "testbed-openpbs"
PORT = topology.PBS_LOGIN_PORT
pbs = get_scheduler("pbs")


@pytest.fixture
def hpcnb(testbed, tmp_path) -> Hpcnb:
    return Hpcnb(tmp_path / "state", config=testbed)


def pbs_ssh(command: str, **kw):
    """A command on login1 as the OpenPBS cluster's login node (real PBS first in PATH)."""
    return ssh(command, port=PORT, **kw)


def _row(hpcnb: Hpcnb, job_id: str, *extra: str) -> dict:
    [row] = [r for r in hpcnb.list_json(CLUSTER, *extra) if r["job_id"] == job_id]
    return row


def _qsub(args: str) -> str:
    proc = pbs_ssh(f"cd /tmp && qsub {args}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _qstat_x(job_id: str, until: str, timeout: float = 60) -> dict[str, str]:
    """`qstat -x -f` of one job, polled until its job_state is `until`."""
    deadline = time.monotonic() + timeout
    while True:
        proc = pbs_ssh(f"qstat -x -f {job_id}")
        attrs = parse_qstat_full(proc.stdout).get(job_id, {})
        if attrs.get("job_state") == until or time.monotonic() > deadline:
            assert attrs.get("job_state") == until, proc.stdout + proc.stderr
            return attrs
        time.sleep(1)


def test_login_port_has_real_pbs_and_port_22_the_wrappers(testbed):
    proc = pbs_ssh("command -v qsub qstat qdel; echo conf=$PBS_CONF_FILE; qstat --version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[:3] == [f"{topology.OPENPBS_PREFIX}/bin/{c}" for c in ("qsub", "qstat", "qdel")]
    assert f"conf={topology.pbs_conf_path(topology.LOGIN)}" in lines
    assert "23.06.06" in proc.stdout
    wrappers = ssh("command -v qsub; echo conf=$PBS_CONF_FILE")
    assert wrappers.stdout.split() == ["/usr/bin/qsub", "conf="], wrappers.stderr


def test_server_has_site_like_queues_nodes_and_history(testbed):
    nodes = pbs_ssh("pbsnodes -a")
    assert nodes.returncode == 0, nodes.stderr
    blocks = {b.split("\n", 1)[0].strip(): b for b in nodes.stdout.split("\n\n") if b.strip()}
    assert set(blocks) == {n.name for n in topology.NODES}
    for block in blocks.values():
        assert re.search(r"^\s+state = (free|job-busy)$", block, re.MULTILINE), block
    assert "resources_available.ngpus = 2" in blocks["node02"]
    assert "ngpus" not in blocks["node01"]
    queues = pbs_ssh("qstat -Q").stdout
    assert {"workq", "gpu"} <= set(pbs.parse_queues(queues)[0]), queues
    server = pbs_ssh("qstat -Bf").stdout
    assert "job_history_enable = True" in server and "default_queue = workq" in server


def test_list_shows_node_and_time_left_then_cancel_is_cancelled(hpcnb):
    job_id = hpcnb.submit(CLUSTER, "--hours", "1")
    try:
        assert job_id.endswith(f".{topology.LOGIN.name}")
        row = _row(hpcnb, job_id)
        assert row["state"] == "running"
        assert row["node"] in {n.name for n in topology.NODES}
        assert row["partition"] == "workq"
        # limit - resources_used.walltime (the Slurm wrappers cannot say: test_pbs.py)
        assert 3000 < row["time_left"] <= 3600, row
    finally:
        cancelled = hpcnb.run("cancel", job_id, "--cluster", CLUSTER)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stderr + cancelled.stdout
    # From PBS's own history: terminated by qdel (substate 91), not a job that completed.
    attrs = _qstat_x(job_id, "F")
    assert attrs["substate"] == "91"
    assert _row(hpcnb, job_id, "--all")["state"] == "cancelled"
    assert job_id not in [r["job_id"] for r in hpcnb.list_json(CLUSTER)]


def test_walltime_warning_then_timeout_ends_attached_submit(hpcnb):
    """PBS kills the job at its walltime (Exit_status -29, JOB_EXEC_KILL_WALLTIME in job.h); the
    attached submit warns before it, then ends, and list says timeout."""
    job_id = walltime_warning_then_end(hpcnb, CLUSTER)
    attrs = _qstat_x(job_id, "F")
    assert attrs["Exit_status"] == "-29"
    assert _row(hpcnb, job_id, "--all")["state"] == "timeout"


def test_failing_job_says_exit_code_and_log_tail(testbed, tmp_path):
    config = derived_config(tmp_path / "hpcnb.toml", testbed, {
        "broken-openpbs": (CLUSTER, {"setup": ["echo hpcnb-test: about to fail", "exit 3"]}),
    })
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    proc = hpcnb.run("submit", "--cluster", "broken-openpbs", "--no-browser", "--no-attach",
                     timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert "failed (exit code 3)" in proc.stderr
    assert "about to fail" in proc.stderr
    assert "Traceback" not in proc.stderr
    [row] = [r for r in hpcnb.list_json("broken-openpbs", "--all")]
    assert row["state"] == "failed"
    attrs = _qstat_x(row["job_id"], "F")
    assert (attrs["Exit_status"], attrs["substate"]) == ("3", "93")


def test_finished_job_leaves_qstat_and_qstat_x_has_it(testbed):
    job_id = _qsub("-N hpcnb -l walltime=00:01:00 -- /bin/true")
    attrs = _qstat_x(job_id, "F")
    assert attrs["Exit_status"] == "0"
    gone = pbs_ssh(f"qstat -f {job_id}")
    # Without -x a finished job is an error, exit 35 (PBSE_HISTJOBID), which hpcnb takes as
    # "not in the queue: ask the history" (hpcnb/schedulers/pbs.py).
    assert gone.returncode == EXIT_FINISHED_JOB, gone
    assert "Job has finished" in gone.stderr
    assert pbs.is_unknown_job_error(gone.stderr, gone.returncode)
    history = pbs_ssh(" ".join(pbs.history_argv([job_id])))
    assert history.returncode == 0, history.stderr
    status = pbs.parse_history(history.stdout)[job_id]
    assert (status.state, status.exit_code, status.name) == (JobState.COMPLETED, "0", "hpcnb")
    assert status.node in {n.name for n in topology.NODES}


def test_unknown_job_id(testbed):
    proc = pbs_ssh(f"qstat -f 999999.{topology.LOGIN.name}")
    assert proc.returncode == EXIT_UNKNOWN_JOB
    assert proc.stderr.strip() == f"qstat: Unknown Job Id 999999.{topology.LOGIN.name}"
    assert pbs.is_unknown_job_error(proc.stderr, proc.returncode)
    assert not pbs.controller_unavailable(proc.stderr, proc.returncode)


def test_gpus_go_to_the_node_that_has_them(hpcnb):
    job_id = hpcnb.submit(CLUSTER, "--partition", "gpu", "--gpus", "1", "--hours", "0.5")
    try:
        row = _row(hpcnb, job_id)
        assert (row["node"], row["partition"]) == ("node02", "gpu")
        attrs = parse_qstat_full(pbs_ssh(f"qstat -f {job_id}").stdout)[job_id]
        assert attrs["Resource_List.ngpus"] == "1"
    finally:
        hpcnb.run("cancel", job_id, "--cluster", CLUSTER)


def test_more_gpus_than_any_node_waits_with_the_schedulers_reason(testbed):
    job_id = _qsub(f"-N hpcnb-{uuid.uuid4().hex[:6]} -q gpu -l select=1:ngpus=3 -- /bin/true")
    try:
        deadline = time.monotonic() + 30
        while True:
            status = pbs.parse_status(pbs_ssh(f"qstat -f {job_id}").stdout)[job_id]
            if status.reason or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert status.state is JobState.PENDING
        assert "Insufficient amount of resource: ngpus" in (status.reason or ""), status
    finally:
        pbs_ssh(f"qdel {job_id}")


def test_walltime_over_the_queue_limit_is_refused_at_submission(hpcnb):
    proc = hpcnb.run("submit", "--cluster", CLUSTER, "--no-browser", "--no-attach",
                     "--partition", "workq", "--hours", "3")
    assert proc.returncode != 0
    # qsub exits 188 (PBSE_EXCQRESC 15036 & 0xff, src/include/pbs_error.h) and hpcnb passes its one line on.
    assert "qsub: Job violates queue and/or server resource limits" in proc.stderr
    assert "exited 188" in proc.stderr
    assert "Traceback" not in proc.stderr
