"""The node hop in a process of its own (hpcnb.ssh.hopprocess, hopchild) against a real sshd on
127.0.0.1, which plays both the login host and the node (its second address, 127.0.0.2)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sshd_fixture import Sshd
from test_ssh_loopback import BLOB_SHA, _Handler, _HttpServer, http_get, login

from hpcnb.errors import HostKeyError, SSHError
from hpcnb.ssh import hopprocess
from hpcnb.ssh.hopprocess import NodeHopTunnel
from hpcnb.ssh.openers import Target


@pytest.fixture(scope="module")
def web() -> Iterator[int]:
    server = _HttpServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def hop_tunnel(sshd: Sshd, port: int, messages: list[str], node: str = "127.0.0.2",
               **kwargs: object) -> NodeHopTunnel:
    first = login(sshd)
    # node-ssh: the node's loopback, port `port`; its host key is known as 127.0.0.1's
    aliases = ("127.0.0.1",) if node == "127.0.0.2" else ()
    target = Target("node-ssh", None, port, None, node, node_aliases=aliases)
    return NodeHopTunnel(target, first, lambda: login(sshd), notify=messages.append, sshd_port=sshd.port,
                         **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def serving(sshd: Sshd, port: int) -> Iterator[tuple[NodeHopTunnel, int, list[str]]]:
    """A started, served node hop tunnel to the node's loopback `port`, stopped at the end; its
    local port and the notices it gave."""
    messages: list[str] = []
    tunnel = hop_tunnel(sshd, port, messages)
    local = tunnel.start()
    tunnel.serve_in_thread()
    try:
        yield tunnel, local, messages
    finally:
        tunnel.stop()
        tunnel.close()


def dead_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return int(closed.getsockname()[1])


def child_pid(tunnel: NodeHopTunnel) -> int:
    child = tunnel._child
    assert child is not None
    return child.proc.pid


def children() -> list[int]:
    """The processes this one started (and has not reaped) still there."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(int(entry.name))
    return found


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def answers_again(port: int, path: str, messages: list[str]) -> None:
    """GET path until it answers (a browser's retries), at most 20 s."""
    deadline = time.monotonic() + 20
    while True:
        try:
            assert http_get(port, path) == f"hello {path}".encode()
            return
        except (OSError, AssertionError):
            assert time.monotonic() < deadline, messages
            time.sleep(0.1)


def test_the_node_hop_in_its_own_process_serves_connections_and_ends_with_stop(sshd: Sshd, web: int) -> None:
    with serving(sshd, web) as (tunnel, port, messages):
        pid = child_pid(tunnel)
        assert pid != os.getpid()
        with ThreadPoolExecutor(16) as pool:
            blob = pool.submit(http_get, port, "/blob")
            small = list(pool.map(lambda i: http_get(port, f"/r{i}"), range(200)))
            assert hashlib.sha256(blob.result()).hexdigest() == BLOB_SHA
        assert small == [f"hello /r{i}".encode() for i in range(200)]
        assert tunnel.login() is not None
    assert gone(pid), "the node hop's process outlived stop()"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert messages == []


def test_an_unknown_node_host_key_is_the_callers_error_and_leaves_no_process(sshd: Sshd, web: int) -> None:
    tunnel = hop_tunnel(sshd, web, [], node="127.0.0.3")  # its key is known under no such name
    before = children()  # the sshd
    with pytest.raises(HostKeyError) as raised:
        tunnel.start()
    assert "127.0.0.3" in str(raised.value)
    assert not [pid for pid in children() if pid not in before and not gone(pid, 2)]
    assert tunnel.port != 0
    socket.create_server(("127.0.0.1", tunnel.port)).close()  # the port was let go


def test_a_node_hop_that_ends_is_made_again_on_the_same_port(sshd: Sshd, web: int) -> None:
    with serving(sshd, web) as (tunnel, port, messages):
        assert http_get(port, "/before") == b"hello /before"
        first = child_pid(tunnel)
        os.kill(first, signal.SIGKILL)
        assert gone(first)
        # The next request waits in the listener's queue while a new child starts, and is served.
        assert http_get(port, "/after") == b"hello /after"
        assert child_pid(tunnel) != first
        assert "connection to 127.0.0.2 lost, reconnecting" in messages
        assert "reconnected after 1 attempt" in messages


def test_a_lost_login_is_made_again_and_so_is_the_hop(sshd: Sshd, web: int) -> None:
    with serving(sshd, web) as (tunnel, port, messages):
        assert http_get(port, "/before") == b"hello /before"
        first_login, first_child = tunnel.login(), child_pid(tunnel)
        assert first_login is not None
        assert sshd.kill_connections(), "no sshd connection process to kill"
        answers_again(port, "/after", messages)
        assert tunnel.login() is not first_login
        assert gone(first_child)
        assert "connection lost, reconnecting" in messages, messages


def test_a_far_end_that_refuses_is_said_by_the_child(sshd: Sshd) -> None:
    dead = dead_port()
    with serving(sshd, dead) as (tunnel, port, messages):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as browser:
            browser.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):  # closed with the request unread: a reset
                assert browser.recv(1) == b""  # closed, no answer
        deadline = time.monotonic() + 5
        # Said by the child's tunnel, through the node's sshd, and relayed
        while not any(m.startswith("cannot open the tunnel's far end") and f"port {dead}" in m
                      for m in messages):
            assert time.monotonic() < deadline, messages
            time.sleep(0.05)
        assert tunnel.login() is not None and child_pid(tunnel)  # the hop itself lives on


def test_ssh_error_names_the_node_when_its_sshd_cannot_be_reached(sshd: Sshd, web: int) -> None:
    first = login(sshd)
    target = Target("node-ssh", None, web, None, "127.0.0.2", node_aliases=("127.0.0.1",))
    tunnel = NodeHopTunnel(target, first, lambda: first, sshd_port=dead_port())
    with pytest.raises(SSHError) as raised:
        tunnel.start()
    assert "127.0.0.2" in str(raised.value)
    first.close()


def test_while_the_node_is_unreachable_each_browser_is_closed_then_served_again(sshd: Sshd, web: int) -> None:
    dead = dead_port()
    with serving(sshd, web) as (tunnel, port, messages):
        tunnel.sshd_port = dead  # the node's sshd is gone: its port refuses
        first = child_pid(tunnel)
        os.kill(first, signal.SIGKILL)
        assert gone(first)
        time.sleep(0.3)
        assert messages == []  # nothing is tried while no browser asks (no login, no prompt)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as browser:
            assert browser.recv(1) == b""  # closed once the hop could not be made, never left hanging
        assert "connection to 127.0.0.2 lost, reconnecting" in messages
        assert any(m.startswith("cannot open the tunnel's far end") and str(dead) in m for m in messages)
        tunnel.sshd_port = sshd.port  # back: the next browser connection makes the hop again
        answers_again(port, "/back", messages)
        assert messages[-1].startswith("reconnected after "), messages  # one attempt per browser refused


def test_stop_while_the_login_is_made_again_leaves_no_child_no_login_and_no_traceback(
        sshd: Sshd, web: int, monkeypatch: pytest.MonkeyPatch) -> None:
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    proceed, made = threading.Event(), []

    def slow_login():  # the reconnect is under way when stop() comes
        proceed.wait(10)
        made.append(login(sshd))
        return made[-1]

    first = login(sshd)
    target = Target("node-ssh", None, web, None, "127.0.0.2", node_aliases=("127.0.0.1",))
    tunnel = NodeHopTunnel(target, first, slow_login, sshd_port=sshd.port)
    port = tunnel.start()
    supervisor = tunnel.serve_in_thread()
    before = children()
    first.close()  # the login drops: the child's session ends with it
    assert gone(child_pid(tunnel))
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        time.sleep(0.3)  # a browser asks: the supervisor reconnects, in slow_login
        tunnel.stop()
        tunnel.close()
        proceed.set()
        supervisor.join(10)
    assert not supervisor.is_alive()
    assert made and not made[0].is_alive()  # the login made after stop() is closed
    assert not [pid for pid in children() if pid not in before and not gone(pid, 2)]
    assert failures == []


def test_the_child_ends_with_its_parent(sshd: Sshd, web: int, tmp_path: Path) -> None:
    program = tmp_path / "parent.py"
    program.write_text(f"""
import sys, threading
sys.path.insert(0, {str(Path(__file__).parents[2])!r})
from hpcnb.ssh import SSHRemote
from hpcnb.ssh import hopprocess
from hpcnb.ssh.hopprocess import NodeHopTunnel
from hpcnb.ssh.openers import Target
first = SSHRemote.connect("127.0.0.1", {sshd.port}, {sshd.user!r}, {str(sshd.client_key)!r},
                          [{str(sshd.known_hosts())!r}], allow_agent=False)
tunnel = NodeHopTunnel(Target("node-ssh", None, {web}, None, "127.0.0.2", node_aliases=("127.0.0.1",)),
                       first, lambda: first, sshd_port={sshd.port})
tunnel.serve_in_thread()
print(tunnel._child.proc.pid, tunnel.port, flush=True)
threading.Event().wait()
""")
    parent = subprocess.Popen([sys.executable, str(program)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid, port = map(int, parent.stdout.readline().split())
        assert http_get(port, "/x") == b"hello /x"
    finally:
        parent.kill()
        parent.wait()
    assert gone(pid), "the node hop's process outlived its parent"


def test_a_child_that_cannot_start_says_why(sshd: Sshd, web: int, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = "import sys; sys.stderr.write('ModuleNotFoundError: paramiko\\n'); sys.exit(3)"
    monkeypatch.setattr(hopprocess, "_CHILD", broken)
    tunnel = hop_tunnel(sshd, web, [])
    with pytest.raises(SSHError) as raised:
        tunnel.start()
    assert "did not start (exit status 3: ModuleNotFoundError: paramiko)" in str(raised.value)
    assert hopprocess.ENV in str(raised.value)  # the way around it
