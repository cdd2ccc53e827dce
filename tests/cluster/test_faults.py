"""Failures on the real testbed, with nothing lost: cut connections, jobs that die, a silent controller."""

from __future__ import annotations

import subprocess
import time

import pytest
from fixtures import CLUSTER_CMD, ssh, sshd_pids_serving
from hpcnb_driver import (
    Background,
    Hpcnb,
    derived_config,
    keeper_logs,
    keeper_pids,
    keepers_folder,
    walltime_warning_then_end,
)
from testbed.proc import read_pid, stop_pid

pytestmark = pytest.mark.cluster


@pytest.fixture
def hpcnb(testbed, tmp_path) -> Hpcnb:
    return Hpcnb(tmp_path / "state", config=testbed)


def _login_sshd_pids_serving(pid: int) -> list[int]:
    """The sshd processes on login1 serving laptop process `pid`'s SSH connection, or its keeper's
    (hpcnb.keeper: the keeper holds the connection for the command)."""
    return sshd_pids_serving([pid, *keeper_pids(keepers_folder())])


def _kill_with_children(pids: list[int]) -> None:
    for pid in pids:
        subprocess.run(["pkill", "-KILL", "-P", str(pid)], check=False)
        subprocess.run(["kill", "-KILL", str(pid)], check=False)


@pytest.mark.parametrize("cluster", ["testbed", "testbed-node-ssh"])
def test_cut_ssh_connection_reconnects_on_the_same_port_and_kernel_keeps_state(hpcnb, cluster):
    job_id = hpcnb.submit(cluster, "--hours", "0.5")
    try:
        with hpcnb.attach(job_id, cluster) as attached:
            kernel = attached.start_kernel()
            attached.execute(kernel, "kept = 41")
            _kill_with_children(_login_sshd_pids_serving(attached.proc.pid))

            cut = time.monotonic()
            while True:
                try:
                    status, _ = attached.http("GET", "/api/status")
                    break
                except OSError:
                    assert time.monotonic() - cut < 20, attached.stderr()
                    time.sleep(0.5)
            assert status == 200
            assert time.monotonic() - cut < 20
            assert attached.execute(kernel, "kept + 1") == "42"
            assert "reconnect" in attached.stderr()
    finally:
        hpcnb.run("cancel", job_id, "--cluster", cluster)


def test_job_failing_in_setup_stops_submit_with_state_and_output(testbed, tmp_path):
    config = derived_config(tmp_path / "hpcnb.toml", testbed, {
        "broken": ("testbed", {"setup": ["echo hpcnb-test: about to fail", "exit 3"]}),
    })
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    started = time.monotonic()
    proc = hpcnb.run("submit", "--cluster", "broken", "--no-browser", "--no-attach", timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert "failed" in proc.stderr
    assert "about to fail" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60


def test_jupyter_missing_stops_submit(testbed, tmp_path):
    config = derived_config(tmp_path / "hpcnb.toml", testbed, {
        "nojupyter": ("testbed", {"setup": ["true"], "python": "/usr/bin/python3"}),
    })
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    proc = hpcnb.run("submit", "--cluster", "nojupyter", "--no-browser", "--no-attach", timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert "jupyter" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr


def test_jupyter_that_never_answers_is_a_start_timeout(testbed, tmp_path):
    fake = "~/.hpcnb-test-fakejupyter"
    made = ssh(f"mkdir -p {fake} && printf '#!/bin/sh\\nexec sleep 300\\n' > {fake}/jupyter "
               f"&& chmod +x {fake}/jupyter && cd {fake} && pwd")
    assert made.returncode == 0, made.stderr
    config = derived_config(tmp_path / "hpcnb.toml", testbed, {
        "hangs": ("testbed", {"setup": ["source /opt/hpcnb-testbed/venv/bin/activate",
                                        f"export PATH={made.stdout.strip()}:$PATH"],
                              "start_timeout": 15}),
    })
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    proc = hpcnb.run("submit", "--cluster", "hangs", "--no-browser", "--no-attach", timeout=180)
    assert proc.returncode == 10, proc.stderr
    assert "did not answer within 15 s" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cancelled_outside_hpcnb_attach_says_so(hpcnb):
    job_id = hpcnb.submit("testbed", "--hours", "0.5")
    attach = Background(hpcnb, "attach", job_id, "--cluster", "testbed", "--no-browser")
    try:
        attach.wait_for(r"^http://127\.0\.0\.1:\d+/lab\?token=", 60)
        assert ssh(f"scancel {job_id}").returncode == 0
        assert attach.finish(60) == 9, attach.stderr()
        assert f"job {job_id} has ended" in attach.stderr()
    finally:
        attach.stop()
    [row] = [r for r in hpcnb.list_json("testbed", "--all") if r["job_id"] == job_id]
    assert row["state"] == "cancelled"


def test_walltime_warning_then_timeout_ends_attached_submit(hpcnb):
    job_id = walltime_warning_then_end(hpcnb, "testbed")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        [row] = [r for r in hpcnb.list_json("testbed", "--all") if r["job_id"] == job_id]
        if row["state"] == "timeout":
            break
        time.sleep(3)
    assert row["state"] == "timeout"


def test_eight_processes_submitting_and_listing_at_once(hpcnb):
    submits = [Background(hpcnb, "submit", "--cluster", "testbed", "--no-browser", "--no-attach",
                          "--hours", "0.25", "--name", f"par{i}") for i in range(8)]
    lists = [Background(hpcnb, "list", "--cluster", "testbed", "--json", "--all") for _ in range(8)]
    job_ids = []
    try:
        for lister in lists:
            assert lister.finish(120) == 0, lister.stderr() + keeper_logs()
        for submit in submits:
            assert submit.finish(300) == 0, submit.stderr() + keeper_logs()
            job_ids.append("".join(submit.out).strip().splitlines()[-1])
        rows = {r["job_id"]: r for r in hpcnb.list_json("testbed", "--all")}
        assert set(job_ids) <= rows.keys()
        assert {rows[j]["name"] for j in job_ids} == {f"par{i}" for i in range(8)}
    finally:
        for submit in submits:
            submit.stop()
        for job_id in job_ids:
            hpcnb.run("cancel", job_id, "--cluster", "testbed")


def test_controller_down_while_waiting_is_unknown_not_gone(testbed, tmp_path):
    """slurmctld stops while `submit` waits: it says so, keeps waiting, and goes on once it is back."""
    config = derived_config(tmp_path / "hpcnb.toml", testbed, {
        "held": ("testbed", {"extra_directives": ["--hold"]}),
    })
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    submit = Background(hpcnb, "submit", "--cluster", "held", "--no-browser", "--no-attach", "--hours", "0.5")
    job_id = None
    try:
        job_id = submit.wait_for(r"submitted job (\d+)", 60).group(1)
        submit.wait_for(r"queued", 30)
        pid = read_pid("slurmctld")
        assert pid, "slurmctld is not running"
        stop_pid(pid)
        try:
            submit.wait_for(r"controller does not answer", 120)
            assert submit.proc.poll() is None, "submit must keep waiting"
        finally:
            up = subprocess.run([str(CLUSTER_CMD), "up"], capture_output=True, text=True, timeout=300)
            assert up.returncode == 0, up.stdout + up.stderr
        assert ssh(f"scontrol release {job_id}").returncode == 0
        assert submit.finish(240) == 0, submit.stderr()
        assert "".join(submit.out).strip().splitlines()[-1] == job_id
        assert "not known" not in submit.stderr()
    finally:
        submit.stop()
        if job_id:
            hpcnb.run("cancel", job_id, "--cluster", "held")
