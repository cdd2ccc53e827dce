"""hpcnb.ssh.feed.SocketFeed with a real socket pair; the channel is a stand-in that records the
window credits (the real path, through sshd, is in tests/integration/test_ssh_loopback.py)."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator

import pytest

from hpcnb.ssh.feed import SocketFeed


class _Credits:
    """What SocketFeed asks of a Channel: _check_add_window, remote_chanid, transport."""

    remote_chanid = 7

    def __init__(self) -> None:
        self.total = 0
        self.transport = self

    def _check_add_window(self, n: int) -> int:
        self.total += n
        return 0


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    for end in (a, b):  # small buffers: the socket fills after a few KiB
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    yield a, b
    a.close()
    b.close()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def test_small_data_is_sent_at_once_and_credited(pair: tuple[socket.socket, socket.socket]) -> None:
    browser, far = pair
    chan = _Credits()
    feed = SocketFeed(chan, browser)  # type: ignore[arg-type]
    feed.feed(b"hello")
    assert far.recv(10) == b"hello"
    assert chan.total == 5


def test_what_the_socket_cannot_take_is_drained_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    browser, far = pair
    chan = _Credits()
    feed = SocketFeed(chan, browser)  # type: ignore[arg-type]
    blob = random.Random(2).randbytes(4 << 20)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_all(far)))
    drainer = threading.Thread(target=feed.drain)
    drainer.start()
    for i in range(0, len(blob), 32 * 1024):  # as paramiko's thread feeds packets
        feed.feed(blob[i : i + 32 * 1024])
    reader.start()
    feed.close()
    drainer.join(10)
    browser.shutdown(socket.SHUT_WR)
    reader.join(10)
    assert received == [blob]
    assert chan.total == len(blob)


def test_buffered_data_and_an_early_eof_are_passed_on(pair: tuple[socket.socket, socket.socket]) -> None:
    browser, far = pair
    feed = SocketFeed(_Credits(), browser)  # type: ignore[arg-type]
    feed.start(b"before the feed took over", eof=True)
    feed.drain()  # returns: EOF, and everything written
    browser.shutdown(socket.SHUT_WR)
    assert _read_all(far) == b"before the feed took over"


def test_a_browser_that_went_away_is_raised_by_drain(pair: tuple[socket.socket, socket.socket]) -> None:
    browser, far = pair
    far.close()
    feed = SocketFeed(_Credits(), browser)  # type: ignore[arg-type]
    feed.feed(b"x" * 65536)
    feed.feed(b"more")  # dropped: nobody to tell
    with pytest.raises(OSError):
        feed.drain()
