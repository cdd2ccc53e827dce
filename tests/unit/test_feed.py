"""hpcnb.ssh.feed.SocketFeed with a real socket pair; the channel is a stand-in that records the
window credits (the real path, through sshd, is in tests/integration/test_ssh_loopback.py)."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from hpcnb.ssh.feed import SocketFeed


class _Credits:
    """What SocketFeed asks of a Channel: _check_add_window, remote_chanid, transport (here, one
    without between_packets: done comes in a worker)."""

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


class _Ends:
    """The tunnel's side: done(error) recorded, spawn(fn, *args) on a thread of its own."""

    def __init__(self) -> None:
        self.errors: list[BaseException | None] = []
        self.finished = threading.Event()
        self.threads: list[threading.Thread] = []

    def done(self, error: BaseException | None) -> None:
        self.errors.append(error)
        self.finished.set()

    def spawn(self, fn: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=fn, args=args)
        self.threads.append(thread)
        thread.start()


def _feed(sock: socket.socket, chan: _Credits | None = None) -> tuple[SocketFeed, _Ends]:
    ends = _Ends()
    return SocketFeed(chan or _Credits(), sock, ends.done, ends.spawn), ends  # type: ignore[arg-type]


def test_small_data_is_sent_at_once_credited_and_needs_no_thread(
        pair: tuple[socket.socket, socket.socket]) -> None:
    browser, far = pair
    chan = _Credits()
    feed, ends = _feed(browser, chan)
    feed.feed(b"hello")
    assert far.recv(10) == b"hello"
    assert chan.total == 5
    assert ends.threads == []
    feed.close()  # EOF: done, once, in a worker
    assert ends.finished.wait(5)
    feed.close()
    assert ends.errors == [None]


def test_what_the_socket_cannot_take_is_written_in_order_by_one_writer(
        pair: tuple[socket.socket, socket.socket]) -> None:
    browser, far = pair
    chan = _Credits()
    feed, ends = _feed(browser, chan)
    blob = random.Random(2).randbytes(4 << 20)
    for i in range(0, len(blob), 32 * 1024):  # as paramiko's thread feeds packets, nobody reading
        feed.feed(blob[i : i + 32 * 1024])
    feed.close()
    assert len(ends.threads) == 1  # the writer, started when the socket first refused more
    assert not ends.finished.is_set()  # done waits for the writer
    assert _read_all_after(far, ends, browser) == blob
    assert ends.errors == [None]
    assert chan.total == len(blob)


def _read_all_after(far: socket.socket, ends: _Ends, browser: socket.socket) -> bytes:
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_all(far)))
    reader.start()
    assert ends.finished.wait(10)
    browser.shutdown(socket.SHUT_WR)
    reader.join(10)
    return received[0]


def test_buffered_data_and_an_early_eof_are_passed_on(pair: tuple[socket.socket, socket.socket]) -> None:
    browser, far = pair
    feed, ends = _feed(browser)
    feed.start(b"before the feed took over", eof=True)
    assert _read_all_after(far, ends, browser) == b"before the feed took over"
    assert ends.errors == [None]


def test_a_browser_that_went_away_is_reported_once(pair: tuple[socket.socket, socket.socket]) -> None:
    browser, far = pair
    far.close()
    feed, ends = _feed(browser)
    feed.feed(b"x" * 65536)
    feed.feed(b"more")  # dropped: nobody to tell
    feed.close()
    assert ends.finished.wait(5)
    for thread in ends.threads:
        thread.join(5)
    assert len(ends.errors) == 1 and isinstance(ends.errors[0], OSError)


class _DeadConnection(_Credits):
    """A channel whose SSH connection died: crediting its window fails as paramiko's send does."""

    def _check_add_window(self, n: int) -> int:
        raise EOFError


def test_a_connection_that_died_under_the_writer_is_reported_once(
        pair: tuple[socket.socket, socket.socket]) -> None:
    browser, far = pair
    feed, ends = _feed(browser, _DeadConnection())
    for _ in range(64):  # more than the socket takes: the writer gets the rest
        feed.feed(b"y" * 32 * 1024)
    reader = threading.Thread(target=lambda: _read_all(far))
    reader.start()
    assert ends.finished.wait(10)  # not left hanging for a close() that counts on the writer
    feed.close()
    browser.shutdown(socket.SHUT_WR)
    reader.join(10)
    assert len(ends.errors) == 1 and isinstance(ends.errors[0], EOFError)


def test_it_answers_what_paramiko_asks_of_a_buffer(pair: tuple[socket.socket, socket.socket]) -> None:
    feed, _ = _feed(pair[0])
    assert len(feed) == 0 and not feed.read_ready()  # Channel.__repr__, Channel.recv_ready
