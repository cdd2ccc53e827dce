"""A tunnel channel's incoming data written to the browser's socket by paramiko's own thread.

A paramiko Channel buffers each CHANNEL_DATA packet (BufferedPipe.feed) and wakes the thread
blocked in Channel.recv, which then writes the bytes to the browser. That hand-over, once per SSH
packet (Condition.notify, a thread switch, the GIL changing hands), was the largest single cost
of the tunnel's process on a JupyterLab load over 100 connections: a quarter of its samples
(py-spy --gil, node-ssh mode on the testbed). SocketFeed takes the buffer's place: the transport's
thread sends with MSG_DONTWAIT, and only what the socket cannot take at once (a slow browser) is
left for the tunnel's pump thread to write blocking, in order.

The channel's window is credited once the bytes are in the socket, as Channel.recv credits once
they are read: a slow browser still slows the sender. Where MSG_DONTWAIT is missing (Windows) the
pumps read the channel as before.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

import paramiko
from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST
from paramiko.message import Message

MSG_DONTWAIT: int | None = getattr(socket, "MSG_DONTWAIT", None)


class ChannelSink(Protocol):
    """What takes a channel's place as its `in_buffer` (SSHTransport.feed_channel): feed() for
    each data packet, in the transport's thread; close() at EOF or when the channel closes."""

    def start(self, pending: bytes, eof: bool) -> None: ...
    def feed(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def read_ready(self) -> bool: ...  # paramiko's Channel.recv_ready and __repr__ ask these two
    def __len__(self) -> int: ...


def credit_window(chan: paramiko.Channel, n: int) -> None:
    """What Channel.recv does after a read (paramiko channel.py): count n bytes against the
    channel's window and send WINDOW_ADJUST once a tenth of it has been used."""
    ack = chan._check_add_window(n)
    if ack > 0:
        m = Message()
        m.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
        m.add_int(chan.remote_chanid)
        m.add_int(ack)
        chan.transport._send_user_message(m)


class SocketFeed:
    """A ChannelSink that writes to a socket; `drain()` runs in the tunnel's pump thread until the
    browser has everything."""

    def __init__(self, chan: paramiko.Channel, sock: socket.socket) -> None:
        self._chan = chan
        self._sock = sock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._backlog: deque[bytes] = deque()
        self._draining = False  # drain() is writing bytes taken from the backlog: keep the order
        self._eof = False
        self._error: OSError | None = None

    def feed(self, data: bytes) -> None:
        sent = 0
        with self._lock:
            if self._error is not None or self._eof:
                return  # the browser's side failed, or the tunnel closed the channel: nobody to tell
            if self._backlog or self._draining:
                self._backlog.append(data)
                self._wake.notify()
                return
            try:
                sent = self._sock.send(data, MSG_DONTWAIT or 0)
            except BlockingIOError:
                sent = 0
            except OSError as exc:  # reset by the browser: drain() raises it, the tunnel closes both
                self._error = exc
                self._wake.notify()
                return
            if sent < len(data):
                self._backlog.append(data[sent:])
                self._wake.notify()
        if sent:
            credit_window(self._chan, sent)

    def start(self, pending: bytes, eof: bool) -> None:
        """What the channel had buffered before this feed took over, and whether its EOF came."""
        with self._lock:
            if pending:
                self._backlog.append(pending)
            self._eof = self._eof or eof
            self._wake.notify()

    def close(self) -> None:
        with self._lock:
            self._eof = True
            self._wake.notify()

    def drain(self) -> None:
        """Write what the socket could not take at once, until EOF; raises the socket's error."""
        while True:
            with self._lock:
                if not self._backlog:
                    self._draining = False
                while not self._backlog and not self._eof and self._error is None:
                    self._wake.wait()
                if self._error is not None:
                    raise self._error
                if not self._backlog:
                    return  # EOF, and the browser has every byte
                data = b"".join(self._backlog)
                self._backlog.clear()
                self._draining = True
            try:
                self._sock.sendall(data)
            except OSError as exc:
                with self._lock:
                    self._error = exc
                raise
            credit_window(self._chan, len(data))

    def read_ready(self) -> bool:
        return False

    def __len__(self) -> int:
        return 0


def deliver(upstream: object, sock: socket.socket) -> Callable[[], None] | None:
    """Send upstream's incoming data to sock from now on; the returned drain() runs until EOF.
    None when upstream is not a channel of an hpcnb SSHTransport (which has feed_channel), or on
    a platform without MSG_DONTWAIT: then the caller reads the upstream itself."""
    if MSG_DONTWAIT is None or not isinstance(upstream, paramiko.Channel):
        return None
    feed_channel = getattr(upstream.get_transport(), "feed_channel", None)
    if feed_channel is None:
        return None
    feed = SocketFeed(upstream, sock)
    feed_channel(upstream, feed)
    return feed.drain
