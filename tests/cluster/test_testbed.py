"""The testbed itself: each promise of tests/testbed/cluster checked with the real tools."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid

import pytest
from fixtures import ssh, ssh_argv
from testbed import topology

pytestmark = pytest.mark.cluster


def test_ssh_to_login_as_ordinary_user_with_strict_host_keys(testbed):
    proc = ssh("hostname; id -u; echo $SLURM_CONF")
    assert proc.returncode == 0, proc.stderr
    hostname, uid, slurm_conf = proc.stdout.split()
    assert hostname == "login1"
    assert int(uid) != 0
    assert slurm_conf == str(topology.SLURM_CONF)


def test_unknown_host_key_is_refused(testbed, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [a.replace(str(topology.KNOWN_HOSTS), str(empty)) for a in ssh_argv()]
    proc = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "Host key verification failed" in proc.stderr


def test_sbatch_runs_on_a_node_as_the_user_and_output_lands_in_shared_home(testbed):
    tag = uuid.uuid4().hex[:8]
    proc = ssh(f"sbatch --parsable --wait --output=tb-{tag}-%j.out "
               "--wrap 'echo \"tb-result $(hostname) $(id -un)\"'", timeout=120)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().splitlines()[-1]
    out = ssh(f"cat tb-{tag}-{job_id}.out; rm -f tb-{tag}-{job_id}.out")
    # Only our own lines: Slurm may add notices of its own, and a job it requeued (a node that
    # stopped answering under load) appends its second run's output to the first.
    results = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("tb-result ")]
    assert results, f"job output:\n{out.stdout}{out.stderr}"
    node, user = results[-1]
    assert node in {"node01", "node02"}
    assert user == topology.USERS[0]


PBS_SCRIPT = """#!/bin/bash
#PBS -N tb-pbs
#PBS -l walltime=00:05:00
#PBS -q gpu
sleep 30
"""


def test_qsub_with_pbs_directives_runs_and_qstat_f_shows_it(testbed):
    proc = ssh("f=$(mktemp -p .) && cat > $f && qsub $f; rm -f $f", input=PBS_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().splitlines()[-1]
    try:
        deadline = time.monotonic() + 30
        while True:
            info = ssh(f"qstat -f {job_id}").stdout
            if "job_state = R" in info or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "Job_Name = tb-pbs" in info
        assert "queue = gpu" in info
        assert "Resource_List.walltime = 00:05:00" in info
        assert "job_state = R" in info
        assert "exec_host = node0" in info
    finally:
        ssh(f"qdel {job_id}")


def test_login_reaches_node_ssh_but_laptop_does_not(testbed):
    node = topology.NODES[0]
    probe = ("python3 -c 'import socket,sys; s=socket.create_connection((sys.argv[1], 22), 3); "
             "print(s.recv(4).decode())' ")
    proc = ssh(probe + node.addr)
    assert proc.stdout.strip() == "SSH-", proc.stderr
    with pytest.raises(OSError):
        socket.create_connection((node.addr, 22), timeout=3)


def test_job_over_the_partition_limit_is_refused(testbed):
    proc = ssh("sbatch --partition=debug --time=03:00:00 --wrap true")
    assert proc.returncode != 0
    assert "time limit" in proc.stderr.lower()
