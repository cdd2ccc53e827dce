"""`hpcnb ssh`, `hpcnb proxy` and `hpcnb code` on the testbed: the job's node over the same route
and login as the tunnel, host keys strict, for the paramiko backend (with its keeper) and the
OpenSSH one."""

from __future__ import annotations

import subprocess

import pytest
from hpcnb_driver import Hpcnb

pytestmark = pytest.mark.cluster


@pytest.fixture
def hpcnb(testbed, tmp_path) -> Hpcnb:
    return Hpcnb(tmp_path / "state", config=testbed, home=tmp_path)


@pytest.mark.parametrize("cluster", ["testbed", "testbed-openssh", "testbed-socket"])
def test_ssh_runs_a_command_on_the_jobs_node(hpcnb, job, cluster):
    job_id = job(cluster)
    proc = hpcnb.run("ssh", job_id, "--cluster", cluster, "--", "hostname")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == hpcnb.row(cluster, job_id)["node"]
    failing = hpcnb.run("ssh", job_id, "--cluster", cluster, "--", "exit 7")
    assert failing.returncode == 7, failing.stderr  # the command's exit status, as ssh gives it


def test_ssh_to_an_ended_job_is_one_line(hpcnb, job):
    job_id = job("testbed")
    assert hpcnb.run("cancel", job_id, "--cluster", "testbed").returncode == 0
    proc = hpcnb.run("ssh", job_id, "--cluster", "testbed", "--", "hostname")
    assert proc.returncode == 9, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "has ended" in proc.stderr


def test_code_writes_a_host_entry_that_system_ssh_rides(hpcnb, job, tmp_path):
    job_id = job("testbed")
    proc = hpcnb.run("code", job_id, "--cluster", "testbed", "--yes")
    assert proc.returncode == 0, proc.stderr
    alias = f"hpcnb-testbed-{job_id}"
    entries = tmp_path / ".ssh" / "hpcnb.conf"
    assert f"Host {alias}" in entries.read_text()
    assert (tmp_path / ".ssh" / "config").read_text().startswith("Include hpcnb.conf")
    assert f"ssh-remote+{alias}" in proc.stdout  # no `code` on PATH here: what to run is printed
    # The system ssh, through the entry alone, with strict host key checking: the node's name.
    ssh = subprocess.run(["ssh", "-F", str(entries), "-o", "BatchMode=yes", alias, "hostname"],
                         capture_output=True, text=True, timeout=60, env=hpcnb.env)
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.strip() == hpcnb.row("testbed", job_id)["node"]
    assert "StrictHostKeyChecking yes" in entries.read_text()
    # The job ends: its entry goes.
    assert hpcnb.run("cancel", job_id, "--cluster", "testbed").returncode == 0
    assert alias not in entries.read_text()


def test_code_refuses_an_unknown_node_key(hpcnb, job, tmp_path):
    """The node's key is checked under its name: with an empty known_hosts, ssh refuses."""
    job_id = job("testbed")
    assert hpcnb.run("code", job_id, "--cluster", "testbed", "--yes").returncode == 0
    entries = tmp_path / ".ssh" / "hpcnb.conf"
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    text = entries.read_text()
    start = text.index("UserKnownHostsFile")
    end = text.index("\n", start)
    entries.write_text(text[:start] + f"UserKnownHostsFile {empty}" + text[end:])
    ssh = subprocess.run(["ssh", "-F", str(entries), "-o", "BatchMode=yes", f"hpcnb-testbed-{job_id}",
                          "hostname"], capture_output=True, text=True, timeout=60, env=hpcnb.env)
    assert ssh.returncode == 255 and "Host key verification failed" in ssh.stderr, ssh.stderr


@pytest.mark.parametrize(("cluster", "bind"), [("testbed", "0.0.0.0"), ("testbed-socket", "127.0.0.1"),
                                               ("testbed-openssh-node-ssh", "127.0.0.1")])
def test_forward_brings_another_port_of_the_node(hpcnb, job, cluster, bind):
    """A web app beside the notebook (here python's http.server standing in for a Dask dashboard):
    `hpcnb forward JOBID 8787` serves it on 127.0.0.1 the way the notebook's tunnel goes."""
    import re
    import urllib.request

    from hpcnb_driver import Background

    job_id = job(cluster)
    started = hpcnb.run("ssh", job_id, "--cluster", cluster, "--",
                        f"cd /tmp && (nohup python3 -m http.server 8787 --bind {bind} "
                        ">/dev/null 2>&1 &) ; sleep 1")
    assert started.returncode == 0, started.stderr
    forward = Background(hpcnb, "forward", job_id, "8787", "--cluster", cluster)
    try:
        line = forward.wait_for(r"^http://127\.0\.0\.1:(\d+)/  \(port 8787 on node0\d\)", 90)
        port = int(line.group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200 and b"Directory listing" in response.read()
        assert re.search(r"lab\?token=", "".join(forward.out))  # the notebook's URL beside it
        [row] = [r for r in hpcnb.list_json(cluster) if r["job_id"] == job_id]
        assert row["ports"] == {"8787": port} and row["local_port"]
    finally:
        forward.stop()
        hpcnb.run("ssh", job_id, "--cluster", cluster, "--", "pkill -f 'http.server 8787'")
