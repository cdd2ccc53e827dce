"""hpcnb end to end on the real testbed: Slurm, Slurm's PBS commands and a real OpenPBS, in each
tunnel mode.

Each test submits a real job through login1, which starts a real JupyterLab on node01 or node02;
the test reaches it only through the URL `hpcnb attach` prints.
"""

from __future__ import annotations

import re
import signal
import socket

import pytest
from hpcnb_driver import Hpcnb
from testbed import topology

pytestmark = pytest.mark.cluster

CLUSTERS = ["testbed", "testbed-node-ssh", "testbed-torque", "testbed-torque-node-ssh",
            "testbed-openpbs", "testbed-openpbs-node-ssh", "testbed-openpbs-socket"]
# Slurm's ids are numbers (also through its torque wrappers); OpenPBS's name the server: 12.login1.
OPENPBS_JOB_ID = rf"\d+\.{topology.LOGIN.name}"
ENDED = {"cancelled", "completed", "failed", "timeout", "ended"}


@pytest.fixture
def hpcnb(testbed, tmp_path) -> Hpcnb:
    return Hpcnb(tmp_path / "state", config=testbed)


def _session(rows: list[dict], job_id: str) -> dict:
    matches = [r for r in rows if r["job_id"] == job_id]
    assert matches, rows
    return matches[0]


def _unreachable_from_laptop(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=3).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_submit_attach_kernel_list_cancel(hpcnb, cluster):
    job_id = hpcnb.submit(cluster, "--partition", "gpu", "--hours", "1")
    assert re.fullmatch(OPENPBS_JOB_ID if "openpbs" in cluster else r"\d+", job_id), job_id
    try:
        with hpcnb.attach(job_id, cluster) as attached:
            status, _ = attached.http("GET", "/api/status")
            assert status == 200
            kernel = attached.start_kernel()
            assert attached.execute(kernel, "21*2") == "42"

            session = _session(hpcnb.list_json(cluster), job_id)
            assert session["state"] == "running"
            assert session["node"] in {"node01", "node02"}
            assert session["partition"] == "gpu"
            assert session["cluster"] == cluster
            assert {"time_left"} <= session.keys()

            # The notebook is reachable only through the tunnel, never directly.
            for node in topology.NODES:
                assert _unreachable_from_laptop(node.addr, 22)
    finally:
        cancelled = hpcnb.run("cancel", job_id, "--cluster", cluster)
    assert cancelled.returncode == 0, cancelled.stderr
    assert _session(hpcnb.list_json(cluster, "--all"), job_id)["state"] in ENDED
    assert job_id not in [r["job_id"] for r in hpcnb.list_json(cluster)]


def test_sigint_detaches_and_second_attach_keeps_kernel_state(hpcnb):
    cluster = "testbed"
    job_id = hpcnb.submit(cluster, "--hours", "0.5")
    try:
        with hpcnb.attach(job_id, cluster) as first:
            kernel = first.start_kernel()
            first.execute(kernel, "remembered = 'still here'")
            code = first.detach(signal.SIGINT)
        assert code == 0, first.stderr()
        assert "detached" in first.stderr()
        assert f"hpcnb attach {job_id}" in first.stderr()

        with hpcnb.attach(job_id, cluster) as second:
            assert second.execute(kernel, "remembered") == "'still here'"
            code = second.detach(signal.SIGTERM)
        assert code == 0, second.stderr()
        assert _session(hpcnb.list_json(cluster), job_id)["state"] == "running"
    finally:
        hpcnb.run("cancel", job_id, "--cluster", cluster)


def test_logs_show_the_jobs_output(hpcnb):
    cluster = "testbed"
    job_id = hpcnb.submit(cluster, "--hours", "0.5")
    try:
        logs = hpcnb.run("logs", job_id, "--cluster", cluster, check=True)
        assert "Jupyter" in logs.stdout or "jupyter" in logs.stdout
    finally:
        hpcnb.run("cancel", job_id, "--cluster", cluster)
