"""The local end of the tunnel: a listener on 127.0.0.1 whose connections are piped to upstreams.

Each browser connection gets its own upstream (a paramiko Channel or a plain socket) from
`open_upstream()`. What the browser sends is read by the tunnel's one reader thread
(hpcnb.browser_reader: a selector over every connection) and sent upstream at once when that
cannot wait, by a worker otherwise. The replies: over SSH paramiko's own thread writes them to the
browser and a worker writes only what the browser could not take at once, and the end
(hpcnb.ssh.feed); from a plain socket, a pump thread per connection (threads kept for the next
connection, hpcnb.workers). Why not a selector for the replies too: measured with
bench/tunnel_loopback.py (256 MiB over loopback sshd, 2 CPUs, best of 3, noisy +-40%), a
single-threaded selector pump was no faster per stream (down 330-700 vs 310-780 MiB/s, up 440-530
vs 410-590), while a Channel.sendall waiting for SSH window space (or a slow browser) in a
selector loop stalls every other connection; the reader hands such a wait to a worker.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from hpcnb.browser_reader import MSG_DONTWAIT, SOCKET_READ, BrowserReader
from hpcnb.errors import HpcnbError, TunnelError
from hpcnb.net import CHANNEL_READ
from hpcnb.workers import WORKERS

# After a channel read of at least a full SSH packet (a download is streaming), pause this long
# before the next read so several packets are handed over per wake-up instead of one: fewer GIL
# hand-offs between paramiko's transport thread and the pump. Small reads (API calls, kernel
# messages) never pause. bench/run.py on the testbed (direct mode, 256 MiB, 2 CPUs, 3 interleaved
# rounds, medians): 152 -> 204 MB/s; with 128 KiB SSH packets (hpcnb/ssh/transport.py) 304 -> 331.
STREAM_PAUSE_S = 0.001
STREAM_READ = 32 * 1024
LOOPBACK = ("127.0.0.1", "localhost")
LISTEN_BACKLOG = 1024
# What opening or using a plain-socket upstream may raise: a dead or refused connection, never a
# bug. An SSH upstream adds its library's own (Tunnel's `errors`, from hpcnb.ssh).
UPSTREAM_ERRORS: tuple[type[BaseException], ...] = (HpcnbError, OSError, EOFError)

Notify = Callable[[str], None]
# An opener's optional `deliver(upstream, client, done, spawn)`: True when it has taken over writing
# the upstream's incoming data to the client; it then calls done(error) once at the end, and
# spawn(fn) to run fn in a worker thread when it must block.
Deliver = Callable[
    [object, socket.socket, Callable[[BaseException | None], None], Callable[..., None]], bool]
# An opener's optional `open_soon(done)`: start opening an upstream and return True at once (False:
# it cannot now, call the opener); done(upstream, None), done(None, why it cannot be opened) or
# done(None, None) (the connection was lost: call the opener, which reconnects) follows, once.
OpenSoon = Callable[[Callable[[Any, BaseException | None], None]], bool]
# An opener's optional `read_by(upstream, errors, spawn)`: a reader, not the tunnel's own, for what
# the browser sends on a connection to that upstream (an SSH transport's thread), or None.
ReadBy = Callable[[object, tuple[type[BaseException], ...], Callable[..., None]], "BrowserReader | None"]


def _nothing() -> None:
    return None


class Upstream(Protocol):
    """What the pumps need: socket.socket and paramiko.Channel both fit."""

    def recv(self, n: int, /) -> bytes: ...
    def sendall(self, data: bytes, /) -> object: ...
    def shutdown(self, how: int, /) -> object: ...
    def close(self) -> object: ...


def _ignore(_message: str) -> None:
    return None


class _Pipe:
    """One browser connection and its upstream; closes both when both directions are done."""

    def __init__(self, client: socket.socket, upstream: Upstream, tunnel: Tunnel) -> None:
        self.client, self.upstream, self.tunnel = client, upstream, tunnel
        self._open_directions = 2
        self._lock = threading.Lock()
        self._reader_owns = False  # the reader has the browser socket: it closes it (close())
        self._closed = False

    def start(self) -> None:
        # The browser's requests: the tunnel's reader thread (hpcnb.browser_reader), which owns the
        # browser socket from here on (a close() meanwhile leaves it to the reader), or this one.
        reader = self.tunnel._reader(self.upstream)
        if reader is not None:
            with self._lock:
                self._reader_owns = True
        # An opener's `deliver` (hpcnb.ssh.feed) may write the upstream's data to the browser from
        # its own thread; it calls _delivered at the end. Otherwise a pump thread copies it.
        deliver = self.tunnel.deliver
        if deliver is None or not deliver(self.upstream, self.client, self._delivered, WORKERS.run):
            WORKERS.run(self._direction, lambda: self._copy(self.upstream, self.client), self.client)
        if reader is None:  # a thread of its own (never the caller's: it may be paramiko's)
            WORKERS.run(self._direction, lambda: self._copy(self.client, self.upstream), self.upstream)
        else:
            reader.add(self)

    # What the reader (hpcnb.browser_reader.Reading) calls.
    def read_released(self) -> bool:
        with self._lock:
            self._reader_owns = False
            return self._closed

    def request_sent(self, eof: bool) -> None:
        if eof:
            self._direction(_nothing, self.upstream)  # pass the EOF on, as a pump would
        else:
            self.close()

    def send_upstream(self, data: bytes) -> None:
        self.upstream.sendall(data)

    def _delivered(self, error: BaseException | None) -> None:
        """The end of a delivered direction: EOF with every byte written, or the browser's error."""
        if error is not None:
            self.close()
            return
        self._direction(_nothing, self.client)  # pass the EOF on, as a pump would

    @staticmethod
    def _copy(src: Upstream, dst: Upstream) -> None:
        from_channel = not isinstance(src, socket.socket)
        size = CHANNEL_READ if from_channel else SOCKET_READ
        while data := src.recv(size):
            dst.sendall(data)  # Channel.send may send less than asked: always sendall
            if from_channel and len(data) >= STREAM_READ:
                time.sleep(STREAM_PAUSE_S)

    def _direction(self, copy: Callable[[], None], dst: Upstream) -> None:
        """Run one direction's copy until its EOF, then pass the EOF on to dst."""
        try:
            copy()
            dst.shutdown(socket.SHUT_WR)  # half-close: pass the EOF on, keep the other way open
        except self.tunnel.errors:
            self.close()  # a reset on either side ends both directions
            return
        except BaseException:
            self.close()  # anything else is a bug: say so (raise), but never leave the browser hanging
            raise
        with self._lock:
            self._open_directions -= 1
            last = self._open_directions == 0
        if last:
            self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            reader_owns = self._reader_owns
        for end in (self.client, self.upstream):
            with contextlib.suppress(*self.tunnel.errors):
                end.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in the other thread
        for end in (self.upstream,) if reader_owns else (self.client, self.upstream):
            with contextlib.suppress(*self.tunnel.errors):
                end.close()  # a socket the reader still watches is closed by the reader, woken above
        self.tunnel._forget(self)


def listen_on(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket on host:port (0: a free port), or TunnelError saying why not."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR lets `attach --port N` re-bind while old connections sit in TIME_WAIT; on
    # Linux it does not allow two listeners on one port, so a taken port still fails.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise TunnelError(
                f"local port {port} is already in use",
                hint="pick another with --port, or leave it out for a free one",
            ) from exc
        raise TunnelError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from exc
    # A page may open many connections at once while this process is busy (the accept thread
    # waits for the GIL): past the queue, the kernel drops the SYNs and the browser retries
    # after 1, 3, 7 s (seen with a test server's queue of 5). The kernel caps it at
    # net.core.somaxconn.
    listener.listen(LISTEN_BACKLOG)
    listener.setblocking(False)
    return listener


class Tunnel:
    """Listen on 127.0.0.1:port (0 = a free port) and pipe each connection to `open_upstream()`.

    An opener may say which exceptions mean "this upstream failed" in an `errors` attribute
    (hpcnb.ssh's do: paramiko's own); the default is UPSTREAM_ERRORS. It may also have a
    `deliver` (Deliver) for the upstream-to-browser direction, a `read_by` (ReadBy) for the other,
    and an `open_soon` (OpenSoon) that opens without a thread waiting for the far end.
    """

    def __init__(
        self,
        open_upstream: Callable[[], Upstream],
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        notify: Notify | None = None,
        listener: socket.socket | None = None,
    ) -> None:
        if host not in LOOPBACK:
            raise TunnelError(
                f"refusing to listen on {host}: the tunnel only binds 127.0.0.1",
                hint="anyone who can reach the port reaches the notebook",
            )
        if not 0 <= port <= 65535:
            raise TunnelError(f"local port {port} is not a valid port number")
        self.open_upstream = open_upstream
        self.errors: tuple[type[BaseException], ...] = getattr(open_upstream, "errors", UPSTREAM_ERRORS)
        self.deliver: Deliver | None = getattr(open_upstream, "deliver", None)
        self.read_by: ReadBy | None = getattr(open_upstream, "read_by", None)
        # Without MSG_DONTWAIT (Windows) every connection has pump threads: an open's answer
        # would only be handed to one.
        self.open_soon: OpenSoon | None = getattr(open_upstream, "open_soon", None) if MSG_DONTWAIT else None
        self.host = "127.0.0.1"
        self.port = port
        self.notify = notify or _ignore
        # A listener made elsewhere (listen_on; hpcnb.ssh.hopchild's is its parent's): served as is.
        self._listener: socket.socket | None = listener
        if listener is not None:
            bound, self.port = listener.getsockname()[:2]
            if bound not in LOOPBACK:
                raise TunnelError(f"refusing to serve a listener on {bound}: only 127.0.0.1")
        self._pipes: set[_Pipe] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._browser_reader: BrowserReader | None = None

    def _reader(self, upstream: Upstream) -> BrowserReader | None:
        """What reads a browser connection: the opener's `read_by` (its SSH transport's thread),
        else the tunnel's reader thread (started with the first connection), or None on a
        platform without MSG_DONTWAIT: then each connection's own thread reads it."""
        if MSG_DONTWAIT is None:
            return None
        with self._lock:
            if self._stopped.is_set():
                return None  # the connection's own thread meets its closed socket and ends
        if self.read_by is not None and (reader := self.read_by(upstream, self.errors, WORKERS.run)):
            return reader
        with self._lock:
            if self._browser_reader is None:
                self._browser_reader = BrowserReader(self.errors, WORKERS.run)
            return self._browser_reader

    def start(self) -> int:
        """Bind and listen; returns the port (the chosen one when port was 0)."""
        if self._listener is None:
            self._listener = listen_on(self.host, self.port)
            self.port = self._listener.getsockname()[1]
        return self.port

    def serve_forever(self) -> None:
        """Accept connections until stop()."""
        listener = self._listener
        if listener is None:
            self.start()
            listener = self._listener
        assert listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopped.is_set():
                for key, _ in sel.select():
                    if key.fileobj is listener:
                        self._accept(listener)

    def serve_in_thread(self) -> threading.Thread:
        """start() and serve_forever() in a daemon thread; returns the thread."""
        self.start()
        thread = threading.Thread(target=self.serve_forever, name="tunnel-accept", daemon=True)
        thread.start()
        return thread

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EMFILE and friends: keep listening, say why this one failed
            self.notify(f"cannot accept a connection on 127.0.0.1:{self.port}: {exc.strerror}")
            time.sleep(0.05)
            return
        client.setblocking(True)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.open_soon is not None:
            try:
                if self.open_soon(functools.partial(self._opened, client)):
                    return  # no thread waits for the far end's answer
            except self.errors:
                pass  # the connection failed as it sent: the way that waits reconnects, or says why
        WORKERS.run(self._handle, client)

    def _opened(self, client: socket.socket, upstream: Upstream | None, error: BaseException | None) -> None:
        """open_soon's answer, in the opener's thread (paramiko's: nothing here may block)."""
        if upstream is not None:
            try:
                self._pipe(client, upstream)
            except BaseException:
                for end in (client, upstream):  # a bug (raised): the browser is not left hanging
                    with contextlib.suppress(*self.errors):
                        end.close()
                raise
        elif error is None:  # the connection was lost meanwhile: the way that waits reconnects
            WORKERS.run(self._handle, client)
        else:
            self._unreachable(client, error)

    def _handle(self, client: socket.socket) -> None:
        try:
            upstream = self.open_upstream()
        except self.errors as exc:
            self._unreachable(client, exc)
            return
        self._pipe(client, upstream)

    def _unreachable(self, client: socket.socket, why: BaseException) -> None:
        self.notify(f"cannot open the tunnel's far end: {why}")
        client.close()

    def carry(self, client: socket.socket, upstream: Upstream) -> None:
        """Pipe a connected local socket to an upstream opened already, as if both came from the
        listener (hpcnb.ssh.hopprocess: the node's sshd to its node hop's process)."""
        self._pipe(client, upstream)

    def _pipe(self, client: socket.socket, upstream: Upstream) -> None:
        if isinstance(upstream, socket.socket):
            with contextlib.suppress(OSError):
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = _Pipe(client, upstream, self)
        with self._lock:
            stopped = self._stopped.is_set()
            if not stopped:
                self._pipes.add(pipe)
        if stopped:
            pipe.close()  # outside the lock: close() takes it (_forget)
            return
        pipe.start()

    def _forget(self, pipe: _Pipe) -> None:
        with self._lock:
            self._pipes.discard(pipe)

    @property
    def connections(self) -> int:
        """Browser connections open right now."""
        with self._lock:
            return len(self._pipes)

    def stop(self) -> None:
        """Stop listening and close every connection."""
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            pipes = list(self._pipes)
            reader, self._browser_reader = self._browser_reader, None
        for pipe in pipes:
            pipe.close()
        if reader is not None:
            reader.stop()

    def __enter__(self) -> Tunnel:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
