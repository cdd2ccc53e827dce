"""Two login nodes behind one name (issue 16): login.hpcnbtb.test resolves to login2, then login1
(the laptop's /etc/hosts, as a site's round-robin DNS name). A login node "dies" by losing its link
to the laptop: packets to it are dropped, no RST, no FIN, as when a node loses power.

What the user sees: a session submitted through one login node is listed and attached through the
other, its handshake read from whichever answers; a dead node costs seconds, not a timeout per
command; the host key checked is the one of the node actually reached, and an error names it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fixtures import seed_session
from hpcnb_driver import Hpcnb, derived_config, stop_keepers
from testbed import topology

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("alone")]

CLUSTER = "testbed-pair"  # login_host = login.hpcnbtb.test (tests/testbed/hpcnb.toml)


@contextlib.contextmanager
def dead(host: topology.Host) -> Iterator[None]:
    """The login node's link to the laptop down: what the laptop sends it is dropped."""
    subprocess.run(["ip", "-n", host.name, "link", "set", "eth0", "down"], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "-n", host.name, "link", "set", "eth0", "up"], check=True)


@pytest.fixture
def laptop(tmp_path: Path) -> Iterator[Callable[[str, Path], Hpcnb]]:
    """laptop(name, config): an hpcnb with its own store and its own keepers (another laptop);
    its keepers and OpenSSH masters end with the test. The keepers' folder is short: a unix
    socket's path has at most 107 bytes."""
    folders: list[Path] = []

    def make(name: str, config: Path) -> Hpcnb:
        runtime = Path(tempfile.mkdtemp(prefix="hb-pair-"))
        folders.append(runtime)
        hpcnb = Hpcnb(tmp_path / name, config=config, home=tmp_path)
        hpcnb.env.update(HPCNB_RUNTIME_DIR=str(runtime), HPCNB_SSH_CONFIG=str(topology.SSH_CONFIG))
        return hpcnb

    yield make
    for folder in folders:
        stop_keepers(folder)
        shutil.rmtree(folder, ignore_errors=True)


def reached(hpcnb: Hpcnb) -> list[tuple[str, int]]:
    """Which login node each of this laptop's keepers is logged in to, and how many logins it made."""
    proc = hpcnb.run("connections", "--json", check=True)
    return [(k["reached"], k["logins"]) for k in json.loads(proc.stdout) if k["cluster"] == CLUSTER]


def logins_on(host: topology.Host, laptop_addr: str) -> int:
    log = topology.LOG / f"sshd-{host.name}.log"
    return log.read_text().count(f"Accepted publickey for hpcuser from {laptop_addr} ")


def answers_again(attached, within: float = 90) -> int:
    """The status of GET /api/status through the attach's (same) URL, once it answers again."""
    deadline = time.monotonic() + within
    while True:
        try:
            return attached.http("GET", "/api/status")[0]
        except OSError:
            assert time.monotonic() < deadline, attached.stderr()
            time.sleep(1)


def test_submitted_through_one_login_node_listed_and_attached_through_the_other(testbed, laptop):
    first = laptop("laptop", testbed)
    before = logins_on(topology.LOGIN2, topology.LOGIN2_LAPTOP_ADDR)
    job_id = first.submit(CLUSTER, "--hours", "0.25")
    try:
        assert reached(first) == [(topology.LOGIN2.addr, 1)]  # the name's first address
        assert logins_on(topology.LOGIN2, topology.LOGIN2_LAPTOP_ADDR) == before + 1

        with first.attach(job_id, CLUSTER) as attached:  # the keeper's tunnel, through login2
            kernel = attached.start_kernel()
            assert attached.execute(kernel, "x = 41; x") == "41"
            with dead(topology.LOGIN2):
                # The keeper's login on login2 is dropped after ServerAliveInterval x
                # ServerAliveCountMax (5 s x 2 for this name in the testbed's ssh config) and made
                # again through login1: the same URL answers, the kernel kept its state.
                assert answers_again(attached) == 200
                assert attached.execute(kernel, "x + 1") == "42"
                assert reached(first) == [(topology.LOGIN.addr, 2)]
                assert first.row(CLUSTER, job_id)["state"] == "running"
                said = attached.stderr().splitlines()
                assert "connection lost, reconnecting" in said and "reconnected after 1 attempt" in said

                # Another laptop, no keeper yet: its first login skips the silent login2 after 1 s,
                # and its attach reads the handshake through login1.
                other = laptop("other-laptop", testbed)
                with other.attach(job_id, CLUSTER) as again:
                    assert again.execute(kernel, "x + 2") == "43"
                assert reached(other) == [(topology.LOGIN.addr, 1)]
    finally:
        cancelled = first.run("cancel", job_id, "--cluster", CLUSTER)
    assert cancelled.returncode == 0, cancelled.stderr


def test_a_command_on_a_kept_login_whose_node_died_runs_again_through_another(testbed, tmp_path, laptop):
    hpcnb = laptop("laptop", testbed)
    seed_session(tmp_path / "laptop", CLUSTER, "999998")  # a running session: `list` asks the cluster
    hpcnb.run("list", "--cluster", CLUSTER, check=True)
    assert reached(hpcnb) == [(topology.LOGIN2.addr, 1)]
    seed_session(tmp_path / "laptop", CLUSTER, "999999")
    with dead(topology.LOGIN2):
        proc = hpcnb.run("list", "--cluster", CLUSTER)  # squeue never starts on login2, then runs
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert reached(hpcnb) == [(topology.LOGIN.addr, 2)]


def test_the_openssh_backends_master_on_a_dead_login_node_gives_way(testbed, laptop):
    # ssh_backend = "openssh": ssh's own ServerAliveInterval x ServerAliveCountMax ends the master
    # on the dead node; the next command's master goes to login1 (ssh tries the addresses in turn).
    cluster = "testbed-openssh-pair"
    hpcnb = laptop("laptop", testbed)
    job_id = hpcnb.submit(cluster, "--hours", "0.25")
    try:
        with dead(topology.LOGIN2):
            deadline = time.monotonic() + 120
            while (proc := hpcnb.run("list", "--cluster", cluster, "--json")).returncode != 0:
                assert time.monotonic() < deadline, proc.stderr  # the master is given up in 10 s
                time.sleep(2)
            assert [r["state"] for r in json.loads(proc.stdout) if r["job_id"] == job_id] == ["running"]
            with hpcnb.attach(job_id, cluster) as attached:
                assert attached.http("GET", "/api/status")[0] == 200
    finally:
        cancelled = hpcnb.run("cancel", job_id, "--cluster", cluster)
    assert cancelled.returncode == 0, cancelled.stderr


def test_the_host_key_checked_is_the_one_of_the_login_node_reached(testbed, tmp_path, laptop):
    # The user has login2's key under the name, not login1's: as after accepting the first key
    # their laptop met, at a site whose login nodes each have their own key.
    lines = topology.KNOWN_HOSTS.read_text().splitlines(keepends=True)
    known = tmp_path / "known_hosts"
    known.write_text("".join(line.replace(f",{topology.LOGIN_ALIAS} ", " ", 1) if line.startswith(
        f"{topology.LOGIN.name},") else line for line in lines))
    assert known.read_text().count(topology.LOGIN_ALIAS) == 1
    config = derived_config(tmp_path / "hpcnb.toml", testbed, {
        "pair": (CLUSTER, {"known_hosts": str(known), "persist": "no"})})
    hpcnb = laptop("laptop", config)
    seed_session(tmp_path / "laptop", "pair", "999998")  # a running session: `list` asks the cluster
    assert hpcnb.run("list", "--cluster", "pair").returncode == 0  # login2: its key is known
    seed_session(tmp_path / "laptop", "pair", "999999")
    with dead(topology.LOGIN2):
        proc = hpcnb.run("list", "--cluster", "pair")
    assert proc.returncode == 5, proc.stderr
    assert "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"hpcnb: error: HOST KEY CHANGED for {topology.LOGIN_ALIAS} "
                            f"(reached at {topology.LOGIN.addr}): it presented ED25519 key "), first
    assert "another of the login nodes behind the name" in proc.stderr
