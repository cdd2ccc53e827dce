"""hpcnb.browser_reader through hpcnb.tunnel.Tunnel, with loopback sockets as upstreams: one
thread reads every connection, a slow upstream waits in a worker without holding up the others,
and sockets are closed once, by whoever reads them."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from upstreams import Echo, SlowShaAfterEof, serve

from hpcnb.browser_reader import send_now
from hpcnb.tunnel import Tunnel


@pytest.fixture
def ports() -> Iterator[dict[str, int]]:
    echo, slow = serve(Echo), serve(SlowShaAfterEof)
    yield {"echo": next(echo), "slow": next(slow)}
    for server in (echo, slow):
        next(server, None)  # past its yield: the server is shut down


@pytest.fixture
def errors() -> Iterator[list[BaseException | None]]:
    seen: list[BaseException | None] = []
    hook, threading.excepthook = threading.excepthook, lambda args: seen.append(args.exc_value)
    yield seen
    threading.excepthook = hook


def _router(ports: dict[str, int]) -> Tunnel:
    """A tunnel whose connections go to the upstream named by the browser's first byte."""
    pending: list[str] = []

    def opener() -> socket.socket:
        return socket.create_connection(("127.0.0.1", ports[pending.pop(0)]))

    tunnel = Tunnel(opener)
    tunnel.serve_in_thread()
    tunnel.pending = pending  # type: ignore[attr-defined]
    return tunnel


def _connect(tunnel: Tunnel, upstream: str) -> socket.socket:
    tunnel.pending.append(upstream)  # type: ignore[attr-defined]
    sock = socket.create_connection(("127.0.0.1", tunnel.port), timeout=10)
    sock.sendall(b"x")  # the tunnel opens the upstream on accept: wait until it has
    if upstream == "echo":
        assert sock.recv(1) == b"x"
    return sock


def test_a_slow_upstream_holds_up_no_other_connection(ports: dict[str, int],
                                                      errors: list[BaseException | None]) -> None:
    tunnel = _router(ports)
    try:
        slow = _connect(tunnel, "slow")
        payload = bytes(range(256)) * 80_000  # 20 MB: far more than the socket buffers
        upload = threading.Thread(target=lambda: (slow.sendall(payload), slow.shutdown(socket.SHUT_WR)))
        upload.start()
        time.sleep(0.2)  # the upload is stuck behind the slow upstream now
        with _connect(tunnel, "echo") as echo:
            started = time.monotonic()
            for i in range(20):
                echo.sendall(b"%d" % i)
                assert echo.recv(100) == b"%d" % i
            assert time.monotonic() - started < 0.8  # answered while the upload still waits
        upload.join(30)
        answer = b""
        while data := slow.recv(100):
            answer += data
        assert answer.decode() == hashlib.sha256(b"x" + payload).hexdigest()
        slow.close()
    finally:
        tunnel.stop()
    assert errors == []


def test_stop_while_an_upload_waits_closes_it(ports: dict[str, int],
                                             errors: list[BaseException | None]) -> None:
    tunnel = _router(ports)
    slow = _connect(tunnel, "slow")
    slow.settimeout(10)
    upload = threading.Thread(target=lambda: _send_until_closed(slow))
    upload.start()
    time.sleep(0.3)
    tunnel.stop()
    upload.join(10)
    assert not upload.is_alive()
    slow.close()
    assert errors == []


def _send_until_closed(sock: socket.socket) -> None:
    try:
        while True:
            sock.sendall(b"y" * 65536)
    except OSError:
        return


def test_hundreds_of_short_connections_reuse_socket_numbers(ports: dict[str, int]) -> None:
    tunnel = _router(ports)
    try:
        for i in range(600):
            with _connect(tunnel, "echo") as sock:
                sock.sendall(b"%d" % i)
                assert sock.recv(100) == b"%d" % i
        deadline = time.monotonic() + 5
        while tunnel.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tunnel.connections == 0
    finally:
        tunnel.stop()


class _Window:
    """What send_now asks of a paramiko Channel: its send window, and sendall."""

    def __init__(self, window: int) -> None:
        self.out_window_size, self.sent = window, b""

    def sendall(self, data: bytes) -> None:
        self.sent += data


def test_send_now_never_waits() -> None:
    assert send_now(_Window(10), b"0123456789") == 10
    assert send_now(_Window(9), b"0123456789") == 0  # a worker waits for the window instead
    assert send_now(object(), b"x") == 0
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(True)
        total = 0
        while sent := send_now(a, b"z" * 65536):
            total += sent
        assert total > 0  # until the buffer is full, then 0 at once instead of blocking
