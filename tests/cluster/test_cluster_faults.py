"""The cluster's own faults under a running session (issue 16), on the real testbed: the
controller restarting while a notebook is attached, and a home the job cannot write."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from fixtures import CLUSTER_CMD, admin_scontrol, ssh
from hpcnb_driver import Hpcnb, derived_config
from testbed.proc import in_host, read_pid, stop_pid
from testbed.topology import LOGIN, SLURM_CONF

pytestmark = pytest.mark.cluster


def _state(hpcnb: Hpcnb, job_id: str) -> str:
    [row] = [r for r in hpcnb.list_json("testbed") if r["job_id"] == job_id]
    return row["state"]


def test_controller_restart_leaves_the_tunnel_and_list_says_unknown_meanwhile(testbed, tmp_path):
    hpcnb = Hpcnb(tmp_path / "state", config=testbed)
    job_id = hpcnb.submit("testbed", "--hours", "0.25")
    try:
        with hpcnb.attach(job_id, "testbed") as attached:
            kernel = attached.start_kernel()
            attached.execute(kernel, "x = 6 * 7")
            pid = read_pid("slurmctld")
            assert pid, "slurmctld is not running"
            stop_pid(pid)
            try:
                listed = hpcnb.run("list", "--cluster", "testbed", "--json")
                assert listed.returncode == 0, listed.stderr
                assert "controller does not answer" in listed.stderr
                assert _state(hpcnb, job_id) == "unknown"  # not ended: nothing is forgotten
                assert attached.execute(kernel, "x") == "42"  # the tunnel does not need slurmctld
            finally:
                up = subprocess.run([str(CLUSTER_CMD), "up"], capture_output=True, text=True, timeout=300)
                assert up.returncode == 0, up.stdout + up.stderr
            assert _state(hpcnb, job_id) == "running"
            assert attached.execute(kernel, "x + 1") == "43"
            assert attached.proc.poll() is None  # attach held on through it all
    finally:
        hpcnb.run("cancel", job_id, "--cluster", "testbed")


def test_a_home_the_job_cannot_write_is_said_with_what_to_do(testbed, tmp_path):
    # The job's session folder under ~/.hpcnb/sessions/<cluster> cannot be made: as with a full
    # home or a quota reached, `mkdir` fails (the testbed's home cannot be filled safely: it is
    # shared), so that folder is made read-only for this cluster name only.
    config = derived_config(tmp_path / "config.toml", testbed, {"fullhome": ("testbed", {})})
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    folder = ".hpcnb/sessions/fullhome"
    assert ssh(f"mkdir -p {folder} && chmod 500 {folder}").returncode == 0
    try:
        proc = hpcnb.run("submit", "--cluster", "fullhome", "--no-browser", "--no-attach", "--hours", "0.1")
    finally:
        ssh(f"chmod 700 {folder}")
    assert proc.returncode == 9, proc.stderr
    error = proc.stderr.strip().splitlines()[-2:]
    assert "ended before the notebook was ready" in proc.stderr
    assert "could not create ~/.hpcnb/sessions/fullhome/" in proc.stderr, proc.stderr
    assert "full or over its quota" in proc.stderr and "`quota`" in proc.stderr, error
    assert "Traceback" not in proc.stderr


def test_node_failure_ends_attach_within_one_watch_interval_with_the_reason(testbed, tmp_path):
    # The node goes down under the job (as slurmctld marks a node whose slurmd stopped answering:
    # the job's processes are killed, the job ends NODE_FAIL). --no-requeue: a requeued job is
    # followed instead (test_requeue.py).
    config = derived_config(tmp_path / "config.toml", testbed, {
        "noreq": ("testbed", {"extra_directives": ["--no-requeue"]})})
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    job_id = hpcnb.submit("noreq", "--hours", "0.25")
    [row] = [r for r in hpcnb.list_json("noreq") if r["job_id"] == job_id]
    node = row["node"]
    try:
        with hpcnb.attach(job_id, "noreq") as attached:
            assert attached.http("GET", "/api/status")[0] == 200
            started = time.monotonic()
            admin_scontrol("update", f"NodeName={node}", "State=DOWN", "Reason=hpcnb-test-node-failure")
            code = attached.proc.wait(timeout=120)
            took = time.monotonic() - started
        assert code == 9, attached.stderr()
        assert took < 60 + 15, took  # one watch interval (the scheduler every 60 s, `ended` every 5 s)
        error = attached.stderr()
        assert f"job {job_id} has ended: node-fail" in error, error
        assert "Traceback" not in error
    finally:
        # RESUME is refused ("Invalid node state") once slurmd has brought the node back itself.
        subprocess.run(in_host(LOGIN, ["scontrol", "update", f"NodeName={node}", "State=RESUME"]),
                       capture_output=True, timeout=60, env={**os.environ, "SLURM_CONF": str(SLURM_CONF)})
        hpcnb.run("cancel", job_id, "--cluster", "noreq")
    assert "down" not in ssh(f"sinfo -h -n {node} -o %T").stdout


# The laptop's wall clock, stepped for hpcnb's processes only (the machine's is shared): time.time()
# plus the seconds in a file, read on every call. (libfaketime cannot do it: with its monotonic
# clocks left alone, Python's time.sleep fails with EINVAL; with them faked, they step too.)
CLOCK_SHIM = """\
import os, time
_real_time = time.time
def _stepped_time():
    try:
        with open(os.environ["HPCNB_TEST_CLOCK_STEP"]) as fh:
            return _real_time() + float(fh.read() or 0)
    except (OSError, ValueError, KeyError):
        return _real_time()
time.time = _stepped_time
"""


def test_a_clock_step_on_the_laptop_moves_neither_time_left_nor_the_warning(testbed, tmp_path):
    shim = tmp_path / "clock-shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(CLOCK_SHIM)
    step = tmp_path / "clock-step"
    step.write_text("0")
    config = derived_config(tmp_path / "config.toml", testbed,
                            {"clockstep": ("testbed", {"walltime_warning": 90})})
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    hpcnb.env.update(PYTHONPATH=str(shim), HPCNB_TEST_CLOCK_STEP=str(step))
    job_id = hpcnb.submit("clockstep", "--time", "00:02:00")  # the warning is due 30 s after its start
    try:
        with hpcnb.attach(job_id, "clockstep") as attached:
            stepped = time.monotonic()
            step.write_text("3600")  # an hour ahead, as NTP or a wrong date can
            [row] = [r for r in hpcnb.list_json("clockstep") if r["job_id"] == job_id]
            assert 30 <= row["time_left"] <= 120, row  # the scheduler's own count, not the laptop's
            while "time limit" not in attached.stderr() and time.monotonic() - stepped < 100:
                time.sleep(0.5)
            took = time.monotonic() - stepped
            assert "reaches its time limit in 1 min" in attached.stderr(), attached.stderr()
        assert took > 10, took  # not at once, as a wall-clock count would (an hour "later")
    finally:
        hpcnb.run("cancel", job_id, "--cluster", "clockstep")
