"""A tunnel channel's incoming data written to the browser's socket by paramiko's own thread.

A paramiko Channel buffers each CHANNEL_DATA packet (BufferedPipe.feed) and wakes the thread
blocked in Channel.recv, which then writes the bytes to the browser. That hand-over, once per SSH
packet (Condition.notify, a thread switch, the GIL changing hands), was the largest single cost
of the tunnel's process on a JupyterLab load over 100 connections: a quarter of its samples
(py-spy --gil, node-ssh mode on the testbed). SocketFeed takes the buffer's place: the transport's
thread sends with MSG_DONTWAIT; only what the socket cannot take at once (a slow browser) is left
to a writer thread, started then, in order. No thread waits on a reply's direction meanwhile.

The channel's window is credited once the bytes are in the socket, as Channel.recv credits once
they are read: a slow browser still slows the sender. Where MSG_DONTWAIT is missing (Windows) the
pumps read the channel as before.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import paramiko
from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST
from paramiko.message import Message

from hpcnb.tunnel import STREAM_PAUSE_S, STREAM_READ

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


# A long download (past PACE_AFTER bytes, in packets of STREAM_READ or more) goes through the writer,
# which pauses STREAM_PAUSE_S between writes so that a few packets gather, as the tunnel's pumps do
# (hpcnb.tunnel). Sending each packet as it came made a 1 GiB download 25 % faster and the machine
# busier, and the kernel's replies slower: p99 during the download, direct mode, testbed, 4
# interleaved rounds, 31-56 ms against 23-39 paced. Shorter replies (a page's assets) are sent as
# they come: with every full packet paced, one A/B run of the 100-connection load (node-ssh) took
# 0.19 s of CPU against 0.16; with this threshold the two measured the same, in either order.
PACE_AFTER = 8 * 1024 * 1024

Done = Callable[[BaseException | None], None]
# What writing to the browser or crediting the window over a dying SSH connection raises: paramiko
# turns a failed send into EOFError, a key exchange that timed out into SSHException.
SEND_ERRORS = (OSError, EOFError, paramiko.SSHException)
Spawn = Callable[..., None]  # spawn(fn, *args): fn(*args) in a worker thread


class SocketFeed:
    """A ChannelSink that writes to a socket. No thread waits on it: paramiko's thread sends what
    the socket takes at once, and a writer is started (`spawn`) only for what it could not take.
    `done(error)` runs once: after EOF, when the socket has every byte (error None), or when the
    socket failed (a browser that went away). Never inside a handler of paramiko's thread: that
    calls close() holding the channel's lock, and done closes the channel. So from paramiko's
    thread it runs once that packet is handled (SSHTransport.between_packets), elsewhere or where
    that cannot be in a worker thread."""

    def __init__(self, chan: paramiko.Channel, sock: socket.socket, done: Done, spawn: Spawn, *,
                 paced: bool = True) -> None:
        self._chan = chan
        # False: never paced (a channel that carries many connections' packets: a node hop's)
        self._pace_after = PACE_AFTER if paced else float("inf")
        self._sock = sock
        self._done = done
        self._spawn = spawn
        self._lock = threading.Lock()
        self._backlog: deque[bytes] = deque()
        self._writing = False  # a writer owns the backlog: later data queues behind it, in order
        self._eof = False
        self._finished = False
        self._received = 0  # bytes fed: past PACE_AFTER, a stream of full packets is paced
        self._between_packets: Callable[..., bool] = getattr(
            chan.transport, "between_packets", _not_here)

    def feed(self, data: bytes) -> None:
        sent, failed, start_writer = 0, None, False
        with self._lock:
            if self._finished or self._eof:
                return  # the browser's side failed, or the tunnel closed the channel: nobody to tell
            self._received += len(data)
            if not self._writing and (len(data) < STREAM_READ or self._received < self._pace_after):
                try:
                    sent = self._sock.send(data, MSG_DONTWAIT or 0)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    failed = exc
            if failed is None and sent < len(data):
                # A writer owns the backlog already (keep the order), the socket is full, or a
                # long download is streaming: the writer paces it (_write).
                self._backlog.append(data[sent:] if sent else data)
                start_writer, self._writing = not self._writing, True
        if failed is not None:
            self._finish(failed, self._spawn)
            return
        if start_writer:
            self._spawn(self._write)
        if sent:
            try:
                credit_window(self._chan, sent)
            except SEND_ERRORS as exc:  # the SSH connection died: its channels are closed next
                self._finish(exc, self._spawn)

    def start(self, pending: bytes, eof: bool) -> None:
        """What the channel had buffered before this feed took over, and whether its EOF came."""
        with self._lock:
            self._eof = eof
            if pending:
                self._backlog.append(pending)
                self._writing = True
        if pending:
            self._spawn(self._write)
        elif eof:
            self._finish(None, self._spawn)

    def close(self) -> None:
        """EOF, or the channel closed: done once the socket has every byte."""
        with self._lock:
            if self._eof:
                return
            self._eof = True
            if self._writing:
                return  # the writer finishes
        self._finish(None, self._spawn)

    def _write(self) -> None:
        """Write the backlog, blocking, until it is empty (a spawned thread)."""
        while True:
            with self._lock:
                if not self._backlog:
                    self._writing = False
                    eof = self._eof
                    break
                data = b"".join(self._backlog)
                self._backlog.clear()
            try:
                self._sock.sendall(data)
                credit_window(self._chan, len(data))
            except SEND_ERRORS as exc:  # the browser went away, or the SSH connection did
                self._finish(exc, _call)
                return
            except BaseException as exc:  # a bug: raised (a traceback), but the browser is told
                self._finish(exc, _call)
                raise
            if len(data) >= STREAM_READ and self._received >= self._pace_after:
                time.sleep(STREAM_PAUSE_S)
        if eof:
            self._finish(None, _call)

    def _finish(self, error: BaseException | None, run: Spawn) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        if run is self._spawn and self._between_packets(self._done, error):
            return  # paramiko's thread calls it after this packet: no worker woken for it
        run(self._done, error)

    # What else paramiko asks of an in_buffer: Channel.recv_ready and Channel.__repr__.
    def read_ready(self) -> bool:
        return False

    def __len__(self) -> int:
        return 0


def _not_here(_fn: Callable[..., object], *_args: object) -> bool:
    return False


def _call(fn: Callable[..., None], *args: object) -> None:
    """Run fn here: the writer is a worker thread already."""
    fn(*args)


def deliver(upstream: object, sock: socket.socket, done: Done, spawn: Spawn, *, paced: bool = True) -> bool:
    """Send upstream's incoming data to sock from now on (SocketFeed: done, spawn, paced). False
    when upstream is not a channel of an hpcnb SSHTransport (which has feed_channel), or on a
    platform without MSG_DONTWAIT: then the caller reads the upstream itself."""
    if MSG_DONTWAIT is None or not isinstance(upstream, paramiko.Channel):
        return False
    feed_channel = getattr(upstream.get_transport(), "feed_channel", None)
    if feed_channel is None:
        return False
    feed_channel(upstream, SocketFeed(upstream, sock, done, spawn, paced=paced))
    return True
