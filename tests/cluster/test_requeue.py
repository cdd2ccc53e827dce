"""A job the scheduler requeues while a notebook is attached (issue 16): `attach` says so, waits
for the job to start again, and moves the tunnel to the new run on the same local port; `list`
shows the job queued meanwhile. On the testbed's Slurm with `scontrol requeue`."""

from __future__ import annotations

import time

import pytest
from fixtures import admin_scontrol
from hpcnb_driver import Hpcnb

pytestmark = pytest.mark.cluster


def test_a_requeued_job_is_followed_on_the_same_local_port(testbed, tmp_path):
    hpcnb = Hpcnb(tmp_path / "state", config=testbed)
    job_id = hpcnb.submit("testbed", "--hours", "0.25")
    try:
        with hpcnb.attach(job_id, "testbed") as attached:
            port, old_token = attached.port, attached.token
            assert attached.http("GET", "/api/status")[0] == 200
            admin_scontrol("requeue", job_id)
            deadline = time.monotonic() + 60
            while "put back in the queue" not in attached.stderr() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "put back in the queue by the scheduler" in attached.stderr()
            assert f"the tunnel follows it on 127.0.0.1:{port}" in attached.stderr()
            assert hpcnb.row("testbed", job_id)["state"] == "pending"  # list shows it queued again
            # Slurm holds a requeued job back for ~2 min (BeginTime); the test lets it go now.
            admin_scontrol("update", f"JobId={job_id}", "StartTime=now")
            url = attached.next_url(timeout=180)  # the new run's URL: same port, a new token
            assert url.startswith(f"http://127.0.0.1:{port}/lab?token=") and old_token not in url
            assert attached.proc.poll() is None
            assert attached.http("GET", "/api/status")[0] == 200
    finally:
        hpcnb.run("cancel", job_id, "--cluster", "testbed")


def test_a_pbs_job_rerun_is_followed_on_the_same_local_port(testbed, tmp_path):
    # qrerun(8B) as the PBS manager: the job is killed and queued again, then runs again at once.
    from testbed import openpbs
    from testbed.topology import LOGIN, OPENPBS_PREFIX

    hpcnb = Hpcnb(tmp_path / "state", config=testbed)
    job_id = hpcnb.submit("testbed-openpbs", "--hours", "0.25")
    try:
        with hpcnb.attach(job_id, "testbed-openpbs") as attached:
            port, old_token = attached.port, attached.token
            openpbs.run(LOGIN, [str(OPENPBS_PREFIX / "bin" / "qrerun"), job_id])
            url = attached.next_url(timeout=180)
            assert "put back in the queue by the scheduler" in attached.stderr(), attached.stderr()
            assert url.startswith(f"http://127.0.0.1:{port}/lab?token=") and old_token not in url
            assert attached.http("GET", "/api/status")[0] == 200
    finally:
        hpcnb.run("cancel", job_id, "--cluster", "testbed-openpbs")
