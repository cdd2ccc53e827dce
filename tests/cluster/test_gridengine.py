"""hpcnb on the testbed's real Son of Grid Engine 8.1.9 (issue 11), end to end in each tunnel mode.

The cell (tests/testbed/testbed/sge.py): sge_qmaster on login1, an sge_execd on node01 and node02,
all.q (8 slots a node, h_rt up to 8 h), the smp PE, a per-job gpu consumable (2 on node02). It is
reached through login1's port 2223, whose sessions have Grid Engine's commands first in PATH.

What differs from Slurm and PBS: ids are plain numbers that start again at 1 with a fresh cell;
qstat forgets a job as soon as it ends and `qacct -j` has it about a second later (failed and
exit_status say how it ended); qsub -w e refuses what no queue can run; exit statuses 99 and 100
are Grid Engine's own (../shared/gridengine/README.md facts 5-8).
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from fixtures import CLUSTER_CMD, on_node, ssh
from hpcnb_driver import Background, Hpcnb, derived_config, walltime_warning_then_end
from testbed import sge as testbed_sge
from testbed import topology
from testbed.proc import read_pid, stop_pid

from hpcnb.schedulers import get_scheduler
from hpcnb.schedulers.sge import parse_qacct

pytestmark = pytest.mark.cluster

CLUSTER = "testbed-sge"
PORT = topology.SGE_LOGIN_PORT
NODES = {n.name for n in topology.NODES}
sge = get_scheduler("sge")


@pytest.fixture
def hpcnb(testbed, tmp_path) -> Hpcnb:
    return Hpcnb(tmp_path / "state", config=testbed)


def sge_ssh(command: str, **kw):
    """A command on login1 as the Grid Engine cluster's login node."""
    return ssh(command, port=PORT, **kw)


def _row(hpcnb: Hpcnb, job_id: str, *extra: str, cluster: str = CLUSTER) -> dict:
    [row] = [r for r in hpcnb.list_json(cluster, *extra) if r["job_id"] == job_id]
    return row


def _qacct(job_id: str, timeout: float = 30) -> dict[str, str]:
    """The job's accounting record, once written (flush_time 1 s: fact 5)."""
    deadline = time.monotonic() + timeout
    while True:
        proc = sge_ssh(f"qacct -j {job_id}")
        if proc.returncode == 0 or time.monotonic() > deadline:
            assert proc.returncode == 0, proc.stdout + proc.stderr
            return parse_qacct(proc.stdout)[job_id]
        time.sleep(0.5)


def _processes_of(job_id: str, node: str) -> str:
    """The user's processes on the node whose environment says they belong to this job (SGE
    exports JOB_ID to the job and everything it starts, Jupyter's kernels included)."""
    proc = on_node(node, f"grep -lsz '^JOB_ID={job_id}$' /proc/[0-9]*/environ || true")
    return proc.stdout.strip()


def test_login_port_has_grid_engine_and_port_22_the_wrappers(testbed):
    proc = sge_ssh("command -v qsub qstat qdel qacct; echo root=$SGE_ROOT cell=$SGE_CELL")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    libexec = topology.SGE_PREFIX / "usr" / "lib" / "gridengine"
    assert lines[:4] == [f"{libexec}/{c}" for c in ("qsub", "qstat", "qdel", "qacct")]
    assert lines[4:] == [f"root={topology.SGE_ROOT}", f"cell={topology.SGE_CELL}"]
    assert sge_ssh("qstat -help").stdout.startswith("SGE 8.1.9")
    wrappers = ssh("command -v qsub; echo root=$SGE_ROOT")
    assert wrappers.stdout.split() == ["/usr/bin/qsub", "root="], wrappers.stderr


def test_cell_is_site_like(testbed):
    assert sge.parse_queues(sge_ssh("qconf -sql").stdout) == (["all.q"], None)
    queue = dict(line.split(None, 1) for line in sge_ssh("qconf -sq all.q").stdout.splitlines())
    assert (queue["pe_list"], queue["slots"], queue["h_rt"], queue["shell"]) == (
        "smp", "8", "08:00:00", "/bin/bash")
    assert "$pe_slots" in sge_ssh("qconf -sp smp").stdout
    gpu = next(line.split() for line in sge_ssh("qconf -sc").stdout.splitlines()
               if line.startswith("gpu "))
    assert gpu[2:6] == ["INT", "<=", "YES", "JOB"]
    assert "hc:gpu=2.000000" in sge_ssh("qhost -F gpu -h node02").stdout
    assert "gpu" not in sge_ssh("qhost -F gpu -h node01").stdout
    conf = sge_ssh("qconf -sconf").stdout
    assert "flush_time=00:00:01" in conf and "ENABLE_ADDGRP_KILL=true" in conf


def test_submit_list_attach_detach_reattach_logs_cancel(hpcnb):
    job_id = hpcnb.submit(CLUSTER, "--hours", "1")
    node = None
    try:
        assert job_id.isdigit()
        row = _row(hpcnb, job_id)
        node = row["node"]
        assert (row["state"], row["partition"]) == ("running", "all.q")
        assert node in NODES
        # h_rt minus (the login host's clock - JAT_start_time), from one qstat -r -xml
        assert 3000 < row["time_left"] <= 3600, row
        with hpcnb.attach(job_id, CLUSTER) as first:
            assert first.http("GET", "/api/status")[0] == 200
            kernel = first.start_kernel()
            assert first.execute(kernel, "21*2") == "42"
            first.execute(kernel, "remembered = 'still here'")
            assert first.detach(signal.SIGINT) == 0, first.stderr()
        assert f"hpcnb attach {job_id}" in first.stderr()
        with hpcnb.attach(job_id, CLUSTER) as second:
            assert second.execute(kernel, "remembered") == "'still here'"
            assert second.detach(signal.SIGTERM) == 0, second.stderr()
        logs = hpcnb.run("logs", job_id, "--cluster", CLUSTER, check=True).stdout
        assert f"hpcnb: job {job_id} started on {node}" in logs
        assert "Jupyter Server" in logs
        assert _processes_of(job_id, node), "the job's processes, kernel included, run"
    finally:
        cancelled = hpcnb.run("cancel", job_id, "--cluster", CLUSTER)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stderr + cancelled.stdout
    record = _qacct(job_id)
    # qdel of a running job: SIGKILL (fact 8)
    assert (record["failed"].split()[0], record["exit_status"].split()[0]) == ("100", "137")
    assert _row(hpcnb, job_id, "--all")["state"] == "cancelled"
    assert job_id not in [r["job_id"] for r in hpcnb.list_json(CLUSTER)]
    # Every process of the job went, the kernel too, though Jupyter started it in a session of its
    # own: ENABLE_ADDGRP_KILL (tests/testbed/testbed/sge.py).
    assert _processes_of(job_id, node) == ""


@pytest.mark.parametrize("cluster", ["testbed-sge-node-ssh", "testbed-sge-socket"])
def test_kernel_through_each_tunnel_mode(hpcnb, cluster):
    job_id = hpcnb.submit(cluster, "--hours", "0.5")
    try:
        with hpcnb.attach(job_id, cluster) as attached:
            kernel = attached.start_kernel()
            assert attached.execute(kernel, "21*2") == "42"
            row = _row(hpcnb, job_id, cluster=cluster)
            assert row["state"] == "running" and row["node"] in NODES
    finally:
        cancelled = hpcnb.run("cancel", job_id, "--cluster", cluster)
    assert cancelled.returncode == 0, cancelled.stderr
    assert _row(hpcnb, job_id, "--all", cluster=cluster)["state"] == "cancelled"


def test_walltime_warning_then_timeout_ends_attached_submit(hpcnb):
    """qmaster kills the job at its h_rt (qacct: failed 37, exit_status 137: fact 8); the attached
    submit warns before it, then ends, and list says timeout."""
    job_id = walltime_warning_then_end(hpcnb, CLUSTER)
    record = _qacct(job_id)
    assert record["failed"].startswith("37")
    assert record["exit_status"].split()[0] == "137"
    assert _row(hpcnb, job_id, "--all")["state"] == "timeout"


def _broken(testbed, tmp_path, setup: list[str]) -> Hpcnb:
    config = derived_config(tmp_path / "hpcnb.toml", testbed, {"broken-sge": (CLUSTER, {"setup": setup})})
    return Hpcnb(tmp_path / "state", config=config)


def test_failing_job_says_exit_code_and_log_tail(testbed, tmp_path):
    hpcnb = _broken(testbed, tmp_path, ["echo hpcnb-test: about to fail", "exit 3"])
    proc = hpcnb.run("submit", "--cluster", "broken-sge", "--no-browser", "--no-attach", timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert "failed (exit code 3)" in proc.stderr
    assert "about to fail" in proc.stderr
    assert "Traceback" not in proc.stderr
    [row] = hpcnb.list_json("broken-sge", "--all")
    assert row["state"] == "failed"
    record = _qacct(row["job_id"])
    assert (record["failed"].split()[0], record["exit_status"].split()[0]) == ("0", "3")


def test_exit_100_does_not_leave_the_job_in_error_state(testbed, tmp_path):
    """A job exiting 100 stays in Grid Engine's error state (Eqw) until deleted (fact 7): the
    script turns 99 and 100 into 1, so the job ends, and hpcnb says it failed."""
    hpcnb = _broken(testbed, tmp_path, ["exit 100"])
    proc = hpcnb.run("submit", "--cluster", "broken-sge", "--no-browser", "--no-attach", timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert "failed (exit code 1)" in proc.stderr
    [row] = hpcnb.list_json("broken-sge", "--all")
    assert row["state"] == "failed"
    record = _qacct(row["job_id"])
    assert record["exit_status"].split()[0] == "1"
    # ended, not held in the error state
    assert "Following jobs do not exist" in sge_ssh(f"qstat -j {row['job_id']}").stderr


def test_gpus_cpus_and_memory_reach_the_scheduler(hpcnb):
    job_id = hpcnb.submit(CLUSTER, "--gpus", "2", "--cpus", "4", "--mem", "8G", "--hours", "0.5")
    try:
        row = _row(hpcnb, job_id)
        # the per-job consumable: 2 in all, though the job has 4 slots (with a per-slot one it
        # would ask for 8 and never run)
        assert (row["node"], row["state"]) == ("node02", "running")
        details = sge_ssh(f"qstat -j {job_id}").stdout
        assert "parallel environment:  smp range: 4" in details
        hard = next(line for line in details.splitlines() if line.startswith("hard resource_list:"))
        assert {"h_rt=1800", "gpu=2", "h_vmem=2G"} <= set(hard.split(None, 2)[2].split(","))
    finally:
        hpcnb.run("cancel", job_id, "--cluster", CLUSTER)


@pytest.mark.parametrize("request_args", [["--hours", "9"], ["--gpus", "3"]])
def test_what_no_queue_can_run_is_refused_at_submission(hpcnb, request_args):
    """qsub -w e (the template): refused at once, not queued for ever."""
    proc = hpcnb.run("submit", "--cluster", CLUSTER, "--no-browser", "--no-attach", *request_args)
    assert proc.returncode == 6, proc.stderr
    assert "Unable to run job: error: no suitable queues" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cancel_while_queued_says_cancelled(hpcnb):
    blocker = sge_ssh("qsub -terse -N blocker -l h_rt=00:05:00,gpu=2 -o /dev/null -j y",
                      input="#!/bin/bash\nsleep 300\n").stdout.strip()
    submit = Background(hpcnb, "submit", "--cluster", CLUSTER, "--no-browser", "--no-attach",
                        "--gpus", "1", "--hours", "0.5")
    try:
        job_id = submit.wait_for(r"submitted job (\d+)", 60).group(1)
        submit.wait_for(r"queued", 30)
        assert _row(hpcnb, job_id)["node"] is None
        cancelled = hpcnb.run("cancel", job_id, "--cluster", CLUSTER)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "not found" in sge_ssh(f"qacct -j {job_id}").stderr
        assert "cancelled" in cancelled.stderr + cancelled.stdout
        assert _row(hpcnb, job_id, "--all")["state"] == "cancelled"
    finally:
        submit.stop()
        sge_ssh(f"qdel {blocker}")


def test_unknown_job_texts(testbed):
    for command in ("qstat -j 999999", "qdel 999999", "qacct -j 999999"):
        proc = sge_ssh(command)
        assert proc.returncode == 1, (command, proc)
        assert sge.is_unknown_job_error(proc.stderr + proc.stdout, 1), (command, proc)
        assert not sge.controller_unavailable(proc.stderr, 1), (command, proc)


def test_controller_down_while_waiting_is_unknown_not_gone(testbed, tmp_path):
    """sge_qmaster stops while `submit` waits for a held job: it says so, keeps waiting, and goes
    on once the qmaster is back (job ids and jobs survive its restart: fact 11)."""
    config = derived_config(tmp_path / "hpcnb.toml", testbed, {
        "held-sge": (CLUSTER, {"extra_directives": ["-h"]}),
    })
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    submit = Background(hpcnb, "submit", "--cluster", "held-sge", "--no-browser", "--no-attach",
                        "--hours", "0.5")
    job_id = None
    try:
        job_id = submit.wait_for(r"submitted job (\d+)", 60).group(1)
        submit.wait_for(r"queued", 30)
        pid = read_pid("sge_qmaster")
        assert pid, "sge_qmaster is not running"
        stop_pid(pid, grace=30)
        try:
            submit.wait_for(r"controller does not answer", 120)
            assert submit.proc.poll() is None, "submit must keep waiting"
        finally:
            up = subprocess.run([str(CLUSTER_CMD), "up"], capture_output=True, text=True, timeout=300)
            assert up.returncode == 0, up.stdout + up.stderr
        assert read_pid("sge_qmaster") and all(read_pid(n) for n in testbed_sge.DAEMONS)
        assert sge_ssh(f"qrls {job_id}").returncode == 0
        assert submit.finish(240) == 0, submit.stderr()
        assert "".join(submit.out).strip().splitlines()[-1] == job_id
    finally:
        submit.stop()
        if job_id:
            hpcnb.run("cancel", job_id, "--cluster", "held-sge")
    assert _row(hpcnb, job_id, "--all", cluster="held-sge")["state"] == "cancelled"
