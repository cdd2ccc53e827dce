"""What every browser connection of a tunnel sends, read by one thread and sent upstream.

A thread per connection, each blocked in recv(), had every request wake its own thread, and each
such thread then fought paramiko's threads for the GIL: on a JupyterLab load over 100 new
connections through a nested hop, the tunnel process made ~3,800 voluntary context switches per
load and spent half its CPU in the kernel, most of it switching (perf: finish_task_switch and
futex; 77 % of the futex calls were the GIL's handoffs). One selector thread reads every
connection that is ready and sends what it read at once when the upstream can take it without
waiting (an SSH channel with the send window for it, a socket with the buffer space); only what
would wait goes to a worker thread, and that connection is read again once the worker is done.
Loopback sshd, the tunnel process per load (medians of 12 interleaved rounds): CPU through a
nested hop 195 -> 181 ms, direct 161 -> 130; voluntary context switches 3,794 -> 2,798.

Whoever reads a connection (this thread, or the worker sending for it) owns its browser socket
until it gives it back: _Pipe.close() from another thread only shuts the socket down, which wakes
this thread, and the socket is closed here (closing a socket still in the selector would leave
its number registered for the next connection that gets it).
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Protocol

SOCKET_READ = 256 * 1024  # per socket.recv(): CPython allocates this much for every call
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", None)  # not on Windows: there, a thread per connection
# Whether another thread's loop can wait on a reader (fileno()): an epoll's descriptor can be polled.
DRIVABLE = MSG_DONTWAIT is not None and selectors.DefaultSelector is getattr(selectors, "EpollSelector", None)


class Reading(Protocol):
    """What the reader needs of a connection (hpcnb.tunnel._Pipe)."""

    client: socket.socket
    upstream: object

    def read_released(self) -> bool: ...  # the reader let go of client: True if close() asked for it
    def request_sent(self, eof: bool) -> None: ...  # EOF (True) or an error: this direction ended
    def send_upstream(self, data: bytes) -> None: ...  # blocking: a worker's


def send_now(upstream: object, data: bytes) -> int:
    """How much of data went upstream without waiting (0 if it would have waited)."""
    if isinstance(upstream, socket.socket):
        try:
            return upstream.send(data, MSG_DONTWAIT or 0)
        except BlockingIOError:
            return 0
    if getattr(upstream, "out_window_size", 0) >= len(data):  # a paramiko Channel: its send window
        upstream.sendall(data)  # type: ignore[attr-defined]
        return len(data)
    return 0


def _raise(exc: BaseException) -> None:
    raise exc


class BrowserReader:
    """A selector over the browser sockets given to it (add), read by a thread of its own, or,
    with own_thread=False, by whoever waits on fileno() and then calls service() (an SSH
    transport's thread: hpcnb.ssh.transport), who calls close() at its end."""

    def __init__(self, errors: tuple[type[BaseException], ...], spawn: Callable[..., None], *,
                 own_thread: bool = True) -> None:
        self.errors = errors  # what a failed upstream raises (the tunnel's)
        self._spawn = spawn  # run a function in a worker thread
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._adds: queue.SimpleQueue[Reading] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopped = False
        if own_thread:
            threading.Thread(target=self._run, name="tunnel-reader", daemon=True).start()

    def add(self, pipe: Reading) -> None:
        """Read pipe.client from now on (any thread). After stop(), the socket is closed instead."""
        with self._lock:
            if not self._stopped:
                self._adds.put(pipe)
                self._wake()
                return
        self._let_go(pipe, eof=False)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending; closed: the thread ended
            self._wake_w.send(b"x")

    def fileno(self) -> int:
        """The selector's own descriptor (an epoll's): readable while a connection or add() is."""
        return self._sel.fileno()  # type: ignore[attr-defined]

    def service(self) -> None:
        """Read every connection that is ready, without waiting (fileno() said some are)."""
        self._serve(self._sel.select(0))

    def close(self) -> None:
        """The end of a reader without its own thread: every connection it reads is let go."""
        self._close_all()

    def _run(self) -> None:
        try:
            while not self._stopped:
                self._serve(self._sel.select())
        finally:
            self._close_all()

    def _serve(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, _ in events:
            if key.fileobj is self._wake_r:
                self._take_adds()
                continue
            try:
                self._read(key.data)
            except Exception as exc:  # noqa: BLE001 - a bug: a worker raises it again (its
                # traceback is shown), its connection is closed, every other one still read
                self._stop_reading(key.data, eof=False)
                self._spawn(_raise, exc)

    def _take_adds(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        while True:
            try:
                pipe = self._adds.get_nowait()
            except queue.Empty:
                return
            # A closed socket's number, reused: let its stale entry go. Looked up by number first:
            # unregister() of a socket never registered raises a KeyError whose message is the
            # socket's repr (getsockname, getpeername), for every new connection.
            with contextlib.suppress(ValueError, OSError):
                stale = self._sel.get_map().get(pipe.client.fileno())
                if stale is not None:
                    self._sel.unregister(stale.fileobj)
            try:
                self._sel.register(pipe.client, selectors.EVENT_READ, pipe)
            except (ValueError, OSError):  # closed before it got here
                self._let_go(pipe, eof=False)

    def _read(self, pipe: Reading) -> None:
        try:
            data = pipe.client.recv(SOCKET_READ)
        except OSError:
            data = None
        if not data:  # EOF (b"") or a reset (None)
            self._stop_reading(pipe, eof=data is not None)
            return
        try:
            sent = send_now(pipe.upstream, data)
        except self.errors:
            self._stop_reading(pipe, eof=False)
            return
        if sent < len(data):  # the upstream would wait: a worker waits, this thread goes on
            self._sel.unregister(pipe.client)
            self._spawn(self._send_then_read, pipe, data[sent:])

    def _stop_reading(self, pipe: Reading, eof: bool) -> None:
        with contextlib.suppress(KeyError, ValueError):  # not registered (a bug's path)
            self._sel.unregister(pipe.client)
        self._let_go(pipe, eof)

    def _send_then_read(self, pipe: Reading, data: bytes) -> None:
        try:
            pipe.send_upstream(data)
        except self.errors:
            self._let_go(pipe, eof=False)
            return
        except BaseException:
            self._let_go(pipe, eof=False)  # a bug: raised, but the browser is not left hanging
            raise
        self.add(pipe)

    def _let_go(self, pipe: Reading, eof: bool) -> None:
        """This direction ended: the socket is closed here if close() was asked for meanwhile."""
        if pipe.read_released():
            with contextlib.suppress(OSError):
                pipe.client.close()
            return
        pipe.request_sent(eof)

    def _close_all(self) -> None:
        with self._lock:
            if self._sel.get_map() is None:  # closed already
                return
            self._stopped = True
        pipes = [key.data for key in self._sel.get_map().values() if key.fileobj is not self._wake_r]
        while True:
            try:
                pipes.append(self._adds.get_nowait())
            except queue.Empty:
                break
        for pipe in pipes:
            self._let_go(pipe, eof=False)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
