"""Tunnel and ReconnectingUpstream (hpcnb.ssh.reconnect) with plain loopback sockets as upstreams
(no SSH)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from upstreams import Echo, ShaAfterEof, serve

from hpcnb import tunnel as tunnel_module
from hpcnb.errors import AuthenticationFailed, HostKeyError, SSHError, TunnelError
from hpcnb.ssh.reconnect import ReconnectingUpstream
from hpcnb.tunnel import Tunnel


@pytest.fixture
def echo_port() -> Iterator[int]:
    yield from serve(Echo)


@pytest.fixture
def sha_port() -> Iterator[int]:
    yield from serve(ShaAfterEof)


def _tunnel(upstream_port: int, port: int = 0) -> Tunnel:
    tunnel = Tunnel(lambda: socket.create_connection(("127.0.0.1", upstream_port)), port=port)
    tunnel.serve_in_thread()
    return tunnel


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while data := sock.recv(65536):
            got += data
    return got


def test_echo_and_nodelay(echo_port: int) -> None:
    tunnel = _tunnel(echo_port)
    try:
        with socket.create_connection(("127.0.0.1", tunnel.port), timeout=5) as sock:
            sock.sendall(b"ping")
            assert sock.recv(10) == b"ping"
            (pipe,) = tunnel._pipes
            assert pipe.client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert tunnel.connections == 1
    finally:
        tunnel.stop()


def test_half_close_reaches_upstream_and_answer_comes_back(sha_port: int) -> None:
    payload = bytes(range(256)) * 40000  # ~10 MiB
    tunnel = _tunnel(sha_port)
    try:
        assert _roundtrip(tunnel.port, payload).decode() == hashlib.sha256(payload).hexdigest()
    finally:
        tunnel.stop()


def test_many_concurrent_connections(echo_port: int) -> None:
    tunnel = _tunnel(echo_port)
    try:
        with ThreadPoolExecutor(100) as pool:
            got = list(pool.map(lambda i: _roundtrip(tunnel.port, b"%d" % i * 1000), range(100)))
        assert got == [b"%d" % i * 1000 for i in range(100)]
    finally:
        tunnel.stop()


def test_only_loopback() -> None:
    for host in ("0.0.0.0", "::", "192.0.2.1", ""):
        with pytest.raises(TunnelError, match="refusing to listen"):
            Tunnel(lambda: socket.socket(), host=host)
    tunnel = Tunnel(lambda: socket.socket(), host="localhost")
    tunnel.start()
    assert tunnel._listener is not None and tunnel._listener.getsockname()[0] == "127.0.0.1"
    tunnel.stop()


def test_port_taken_and_fixed_port_reuse(echo_port: int) -> None:
    first = _tunnel(echo_port)
    with pytest.raises(TunnelError, match=f"^local port {first.port} is already in use"):
        Tunnel(lambda: socket.socket(), port=first.port).start()
    port = first.port
    assert _roundtrip(port, b"x") == b"x"
    first.stop()
    again = _tunnel(echo_port, port=port)  # re-attach on the same port right after
    try:
        assert again.port == port and _roundtrip(port, b"y") == b"y"
    finally:
        again.stop()


def test_failing_upstream_closes_client_and_keeps_listening(echo_port: int) -> None:
    calls: list[int] = []
    messages: list[str] = []

    def flaky() -> socket.socket:
        calls.append(1)
        if len(calls) == 1:
            raise SSHError("connection to login1 lost")
        return socket.create_connection(("127.0.0.1", echo_port))

    tunnel = Tunnel(flaky, notify=messages.append)
    tunnel.serve_in_thread()
    try:
        with socket.create_connection(("127.0.0.1", tunnel.port), timeout=5) as sock:
            assert sock.recv(10) == b""  # closed: no far end
        assert _roundtrip(tunnel.port, b"still here") == b"still here"
        assert messages == ["cannot open the tunnel's far end: connection to login1 lost"]
    finally:
        tunnel.stop()


class _SoonOpener:
    """An opener with open_soon (hpcnb.tunnel.OpenSoon): the test gives each answer itself."""

    def __init__(self, port: int, soon: bool = True) -> None:
        self.port, self.soon = port, soon
        self.answers: list[Callable[[object, BaseException | None], None]] = []
        self.asked = threading.Event()
        self.called = 0

    def __call__(self) -> socket.socket:
        self.called += 1
        return socket.create_connection(("127.0.0.1", self.port))

    def open_soon(self, done: Callable[[object, BaseException | None], None]) -> bool:
        if not self.soon:
            return False
        self.answers.append(done)
        self.asked.set()
        return True

    def answer(self, *args: object) -> None:
        """Answer in another thread, as paramiko's would; it must not hang."""
        thread = threading.Thread(target=self.answers.pop(), args=args)
        thread.start()
        thread.join(5)
        assert not thread.is_alive()


def test_an_answer_to_open_soon_pipes_refuses_or_falls_back(echo_port: int) -> None:
    messages: list[str] = []
    opener = _SoonOpener(echo_port)
    tunnel = Tunnel(opener, notify=messages.append)
    tunnel.serve_in_thread()
    try:
        with socket.create_connection(("127.0.0.1", tunnel.port), timeout=5) as sock:
            assert opener.asked.wait(5)
            opener.answer(socket.create_connection(("127.0.0.1", echo_port)), None)
            sock.sendall(b"ping")
            assert sock.recv(10) == b"ping"
        for answer, said in ((SSHError("login1 could not open a connection: Connect failed"), True),
                             (None, False)):  # the connection was lost: the opener reconnects
            opener.asked.clear()
            with socket.create_connection(("127.0.0.1", tunnel.port), timeout=5) as sock:
                assert opener.asked.wait(5)
                opener.answer(None, answer)
                if said:
                    assert sock.recv(10) == b""
                else:
                    sock.sendall(b"again")
                    assert sock.recv(10) == b"again"
        assert messages == ["cannot open the tunnel's far end: login1 could not open a connection: "
                            "Connect failed"]
        assert opener.called == 1  # only the connection that was lost went the way that waits
    finally:
        tunnel.stop()


def test_an_open_answered_after_stop_is_closed_and_nothing_hangs(echo_port: int) -> None:
    opener = _SoonOpener(echo_port)
    tunnel = Tunnel(opener)
    tunnel.serve_in_thread()
    with socket.create_connection(("127.0.0.1", tunnel.port), timeout=5) as sock:
        assert opener.asked.wait(5)
        tunnel.stop()
        upstream = socket.create_connection(("127.0.0.1", echo_port))
        opener.answer(upstream, None)  # before the fix: the answering thread deadlocked itself
        assert upstream.fileno() == -1 and tunnel.connections == 0
        assert sock.recv(10) == b""


def test_without_msg_dontwait_open_soon_is_not_used(echo_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tunnel_module, "MSG_DONTWAIT", None)  # Windows: pump threads both ways
    opener = _SoonOpener(echo_port)
    tunnel = Tunnel(opener)
    tunnel.serve_in_thread()
    try:
        assert _roundtrip(tunnel.port, b"pumped") == b"pumped"
        assert not opener.answers and opener.called == 1
    finally:
        tunnel.stop()


class _BrokenUpstream:
    """An upstream whose read fails with what no opener declares (a bug, or a library's own)."""

    def recv(self, n: int) -> bytes:
        raise RuntimeError("not an upstream error")

    def sendall(self, data: bytes) -> None:
        return None

    def shutdown(self, how: int) -> None:
        return None

    def close(self) -> None:
        return None


def test_an_unexpected_error_in_a_pump_still_closes_the_browser_side() -> None:
    # It is raised (a traceback: a bug must be seen), but the browser's connection must not hang.
    seen: list[type[BaseException]] = []
    hook, threading.excepthook = threading.excepthook, lambda args: seen.append(args.exc_type)
    tunnel = Tunnel(_BrokenUpstream)
    tunnel.serve_in_thread()
    try:
        with socket.create_connection(("127.0.0.1", tunnel.port), timeout=5) as sock:
            assert sock.recv(10) == b""
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [RuntimeError]
        assert tunnel.connections == 0
    finally:
        threading.excepthook = hook
        tunnel.stop()


def test_stop_closes_open_connections(echo_port: int) -> None:
    tunnel = _tunnel(echo_port)
    sock = socket.create_connection(("127.0.0.1", tunnel.port), timeout=5)
    sock.sendall(b"a")
    assert sock.recv(1) == b"a"
    tunnel.stop()
    assert sock.recv(1) == b""
    sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", tunnel.port), timeout=1)


class FakeConn:
    def __init__(self, name: str) -> None:
        self.name, self.alive, self.closed = name, True, False

    def is_alive(self) -> bool:
        return self.alive and not self.closed

    def close(self) -> None:
        self.closed = True


def test_reconnect_backoff_doubles_to_cap_then_succeeds() -> None:
    made: list[FakeConn] = []
    failures = iter([SSHError("refused")] * 6)

    def connect() -> FakeConn:
        exc = next(failures, None)
        if exc:
            raise exc
        made.append(FakeConn(f"c{len(made)}"))
        return made[-1]

    sleeps: list[float] = []
    messages: list[str] = []
    old = FakeConn("old")
    old.alive = False
    up = ReconnectingUpstream(
        connect, lambda c: c.name, notify=messages.append, connection=old, sleep=sleeps.append
    )
    assert up() == "c0"
    assert sleeps == [0.5, 1, 2, 4, 8, 8]
    assert old.closed and messages[0] == "connection lost, reconnecting"
    assert messages[-1] == "reconnected after 7 attempts"
    assert up() == "c0"  # alive: no new connection
    assert len(made) == 1


def test_reconnect_gives_up_after_max_total() -> None:
    def connect() -> FakeConn:
        raise SSHError("cannot connect to login1 port 22: connection refused")

    sleeps: list[float] = []
    up = ReconnectingUpstream(connect, lambda c: c, max_total=10, sleep=sleeps.append)
    with pytest.raises(SSHError, match=r"could not connect in .* connection refused"):
        up()
    assert sum(sleeps) <= 10 and sleeps == [0.5, 1, 2, 4]


@pytest.mark.parametrize("error", [HostKeyError("HOST KEY CHANGED for login1"),
                                   AuthenticationFailed("the answer to its prompt was refused")])
def test_host_key_and_login_refusals_are_not_retried(error: SSHError) -> None:
    def connect() -> FakeConn:
        raise error

    sleeps: list[float] = []
    with pytest.raises(type(error)):
        ReconnectingUpstream(connect, lambda c: c, sleep=sleeps.append)()
    assert sleeps == []


def test_open_failure_on_live_connection_is_not_a_reconnect() -> None:
    conn = FakeConn("live")
    connects: list[int] = []

    def refuse(c: FakeConn) -> socket.socket:
        raise SSHError("login1 could not open a connection to node1 port 8888: Connection refused")

    up = ReconnectingUpstream(lambda: (connects.append(1), conn)[1], refuse, connection=conn)
    with pytest.raises(SSHError, match="could not open"):
        up()
    assert connects == [] and not conn.closed


def test_open_failure_because_connection_died_reconnects_once() -> None:
    first, second = FakeConn("first"), FakeConn("second")

    def open_(c: FakeConn) -> str:
        if c is first:
            first.alive = False  # the transport died while opening the channel
            raise EOFError
        return c.name

    up = ReconnectingUpstream(lambda: second, open_, connection=first, sleep=time.sleep)
    assert up() == "second"


class _FakeChannel:
    """What a paramiko Channel looks like to the pumps: recv returns what is buffered, then b''."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.received = b""
        self.lock = threading.Lock()

    def recv(self, n: int) -> bytes:
        with self.lock:
            return self.chunks.pop(0)[:n] if self.chunks else b""

    def sendall(self, data: bytes) -> None:
        self.received += data

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass


def test_channel_download_arrives_whole_and_only_big_reads_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    import hpcnb.tunnel as tunnel_module

    big, small = tunnel_module.STREAM_READ, 100
    chunks = [bytes([i % 251]) * (big if i % 2 else small) for i in range(40)]
    pauses: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(tunnel_module.time, "sleep",
                        lambda s: pauses.append(s) if s == tunnel_module.STREAM_PAUSE_S else real_sleep(s))
    tunnel = Tunnel(lambda: _FakeChannel(chunks))
    tunnel.serve_in_thread()
    try:
        assert _roundtrip(tunnel.port, b"") == b"".join(chunks)
    finally:
        tunnel.stop()
    assert len(pauses) == 20  # one per full-packet read, none for the small ones
