"""Bad input, each through the real CLI: one clear line on stderr, a non-zero exit, no traceback.

The scheduler-side refusals (a partition it does not have, a walltime beyond the partition's limit)
come from the testbed's real Slurm; the SSH failures from its real sshd.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hpcnb_driver import Hpcnb, derived_config
from testbed import topology

pytestmark = pytest.mark.cluster


def one_clear_line(proc, code: int, *fragments: str) -> None:
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hpcnb: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def hpcnb(testbed, tmp_path) -> Hpcnb:
    return Hpcnb(tmp_path / "state", config=testbed)


def test_unknown_cluster(hpcnb):
    one_clear_line(hpcnb.run("list", "--cluster", "atlantis"), 3, "atlantis")


def test_missing_config_file(testbed, tmp_path):
    hpcnb = Hpcnb(tmp_path / "state", config=tmp_path / "nowhere.toml")
    one_clear_line(hpcnb.run("list", "--cluster", "testbed"), 3, "nowhere.toml")


@pytest.mark.parametrize("text, key", [
    ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\nparttition = "a"\n', "parttition"),
    ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\nport = "22"\n', "port"),
    ('[clusters.x]\nscheduler = "slurm\n', "line"),
])
def test_invalid_config_names_file_and_key(tmp_path, text, key):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    proc = Hpcnb(tmp_path / "state", config=config).run("list", "--cluster", "x")
    one_clear_line(proc, 3, "bad.toml", key)


def test_partition_the_scheduler_refuses(hpcnb):
    proc = hpcnb.run("submit", "--cluster", "testbed", "--partition", "nosuch", "--no-browser")
    one_clear_line(proc, 6, "refused", "partition")


@pytest.mark.parametrize("hours", ["0", "-1", "abc", "nan"])
def test_hours_not_positive_or_not_a_number(hpcnb, hours):
    proc = hpcnb.run("submit", "--cluster", "testbed", "--hours", hours, "--no-browser")
    one_clear_line(proc, 2, "--hours")


def test_hours_beyond_the_partition_limit(hpcnb):
    proc = hpcnb.run("submit", "--cluster", "testbed", "--partition", "debug", "--hours", "3",
                     "--no-browser")
    one_clear_line(proc, 6, "time limit")


@pytest.mark.parametrize("command", ["attach", "cancel", "logs"])
def test_unknown_job_id(hpcnb, command):
    proc = hpcnb.run(command, "987654", "--cluster", "testbed")
    one_clear_line(proc, 8, "987654")


def test_job_of_another_cluster(hpcnb):
    job_id = hpcnb.submit("testbed-torque", "--hours", "0.25")
    try:
        proc = hpcnb.run("attach", job_id, "--cluster", "testbed", "--no-browser")
        one_clear_line(proc, 8, "testbed-torque")
    finally:
        hpcnb.run("cancel", job_id, "--cluster", "testbed-torque")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose accept queue is full, so new connections time out (no packet leaves)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    yield listener.getsockname()[1]
    for s in [*fillers, listener]:
        s.close()


@pytest.fixture
def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_login_host_refuses(testbed, tmp_path, closed_port):
    config = derived_config(tmp_path / "c.toml", testbed, {
        "refusing": ("testbed", {"login_host": "127.0.0.1", "port": closed_port})})
    # `cancel` always connects (`list` with no active session needs no connection).
    proc = Hpcnb(tmp_path / "state", config=config).run("cancel", "1", "--cluster", "refusing")
    one_clear_line(proc, 4, "refused")


def test_login_host_times_out(testbed, tmp_path, silent_port):
    config = derived_config(tmp_path / "c.toml", testbed, {
        "silent": ("testbed", {"login_host": "127.0.0.1", "port": silent_port})})
    proc = Hpcnb(tmp_path / "state", config=config).run("cancel", "1", "--cluster", "silent", timeout=120)
    one_clear_line(proc, 4, "timed out")


def test_authentication_failure(testbed, tmp_path):
    other_key = str(topology.CLIENT / f"id_ed25519_{topology.USERS[1]}")
    config = derived_config(tmp_path / "c.toml", testbed, {
        "wrongkey": ("testbed", {"identity_file": other_key})})
    proc = Hpcnb(tmp_path / "state", config=config).run("cancel", "1", "--cluster", "wrongkey")
    one_clear_line(proc, 4, "hpcuser@")


def test_unknown_host_key(testbed, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = derived_config(tmp_path / "c.toml", testbed, {
        "unknownkey": ("testbed", {"known_hosts": str(empty)})})
    hpcnb = Hpcnb(tmp_path / "state", config=config, home=tmp_path)
    proc = hpcnb.run("cancel", "1", "--cluster", "unknownkey")
    one_clear_line(proc, 5, "SHA256:", "--accept-new-host-key")


def test_local_port_already_taken(hpcnb):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    job_id = hpcnb.submit("testbed", "--hours", "0.25")
    try:
        proc = hpcnb.run("attach", job_id, "--cluster", "testbed", "--port", str(port), "--no-browser")
        one_clear_line(proc, 11, str(port))
    finally:
        taken.close()
        hpcnb.run("cancel", job_id, "--cluster", "testbed")



@pytest.mark.parametrize("job_id", ["../../etc", "-x", "12 3", "1;id"])
@pytest.mark.parametrize("command", ["attach", "cancel", "logs"])
def test_malformed_job_id_is_refused_before_any_use(hpcnb, command, job_id):
    proc = hpcnb.run(command, "--cluster", "testbed", "--", job_id)
    one_clear_line(proc, 2, "not a job id")
