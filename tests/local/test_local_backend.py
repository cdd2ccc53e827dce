"""The built-in `local` backend end to end on this machine: no cluster, no SSH, a real JupyterLab."""

from __future__ import annotations

import shutil
import time

import pytest
from hpcnb_driver import Hpcnb


@pytest.fixture
def hpcnb(tmp_path) -> Hpcnb:
    if not shutil.which("jupyter-lab"):
        pytest.skip("JupyterLab is not installed (pip install '.[local]')")
    home = tmp_path / "home"
    home.mkdir()
    return Hpcnb(tmp_path / "state", home=home)


def test_submit_list_attach_logs_cancel(hpcnb):
    job_id = hpcnb.submit("local", "--hours", "0.25")
    try:
        with hpcnb.attach(job_id, "local") as attached:
            status, _ = attached.http("GET", "/api/status")
            assert status == 200
            assert attached.execute(attached.start_kernel(), "6*7") == "42"
        [session] = hpcnb.list_json("local")
        assert session["job_id"] == job_id
        assert session["state"] == "running"
        assert session["node"] == "localhost"
        assert 0 < session["time_left"] <= 15 * 60
        logs = hpcnb.run("logs", job_id, "--cluster", "local", check=True)
        assert f"job {job_id} started" in logs.stdout
    finally:
        cancelled = hpcnb.run("cancel", job_id, "--cluster", "local")
    assert cancelled.returncode == 0, cancelled.stderr
    assert hpcnb.list_json("local") == []
    [ended] = hpcnb.list_json("local", "--all")
    assert ended["state"] == "cancelled"


def test_the_time_limit_ends_the_job(hpcnb):
    job_id = hpcnb.submit("local", "--time", "00:01:00")
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        rows = hpcnb.list_json("local", "--all")
        if rows and rows[0]["state"] == "timeout":
            break
        time.sleep(2)
    assert rows[0]["job_id"] == job_id
    assert rows[0]["state"] == "timeout"
    attach = hpcnb.run("attach", job_id, "--cluster", "local", "--no-browser")
    assert attach.returncode == 9
    assert "ended" in attach.stderr
