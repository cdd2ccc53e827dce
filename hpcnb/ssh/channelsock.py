"""A paramiko Channel as the socket of another Transport: an SSH hop carried inside a channel.

paramiko's Packetizer reads its socket a few bytes at a time (a packet's first block, then the
rest, then the MAC). On a Channel each such recv(n) with more than n buffered deletes n bytes
from the front of the channel's buffer (BufferedPipe: `del array[:n]`), which costs as much as
what is buffered: up to the 16 MiB window, twice or more per SSH packet. ChannelSocket takes
each packet of the outer channel whole and serves the small reads from its bytes with an offset
(no front-deletes). Testbed, 256 MiB through `hpcnb attach`, 2 CPUs, interleaved rounds,
medians (with 128 KiB packets, hpcnb.ssh.transport): node-ssh 58 -> 280 MB/s, socket 40 -> 308 MB/s
(OpenSSH `ssh -J -L` 252 and 256).

The outer channel's packets reach it through a queue.SimpleQueue that stands in for the channel's
buffer (SSHTransport.feed_channel): BufferedPipe copied each packet into an array and out again
and woke the reader through a Python-level Condition; a SimpleQueue hands the bytes object over
in C. Those copies and wake-ups were 15-20 % of the tunnel process's samples on a JupyterLab load
over 100 connections in node-ssh mode (py-spy --gil, testbed).
"""

from __future__ import annotations

import queue

import paramiko

from hpcnb.ssh.feed import credit_window


class _Inbox:
    """The outer channel's buffer (a ChannelSink): its packets, then b"" at EOF or close."""

    def __init__(self) -> None:
        self.chunks: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def start(self, pending: bytes, eof: bool) -> None:
        if pending:
            self.chunks.put(pending)
        if eof:
            self.chunks.put(b"")

    def feed(self, data: bytes) -> None:
        self.chunks.put(data)

    def close(self) -> None:
        self.chunks.put(b"")

    def read_ready(self) -> bool:
        return not self.chunks.empty()

    def __len__(self) -> int:
        return self.chunks.qsize()  # packets, not bytes: only paramiko's repr of the channel asks


class ChannelSocket:
    """What paramiko's Transport and Packetizer call on a socket (recv, send, settimeout, close,
    `_closed`, getpeername), over a Channel of an hpcnb SSHTransport (every hop is one: it takes
    the channel's packets, feed_channel). Only the inner transport's own thread reads."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._timeout: float | None = None
        self._inbox = _Inbox()
        chan.get_transport().feed_channel(chan, self._inbox)

    def recv(self, n: int) -> bytes:
        """Up to n bytes: b"" at EOF; socket.timeout when nothing came within the timeout."""
        if self._pos >= len(self._buf):
            if self._eof:
                return b""
            try:
                data = self._inbox.chunks.get(timeout=self._timeout)
            except queue.Empty:
                raise TimeoutError("timed out") from None  # socket.timeout, as paramiko expects
            if not data:
                self._eof = True
                return b""
            credit_window(self.chan, len(data))  # as Channel.recv would on reading it
            if len(data) <= n:
                return data
            self._buf, self._pos = data, 0
        start, self._pos = self._pos, self._pos + n
        return self._buf[start : self._pos]

    def send(self, data: bytes) -> int:
        return self.chan.send(data)

    def sendall(self, data: bytes) -> None:
        self.chan.sendall(data)

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout
        self.chan.settimeout(timeout)  # Channel.send waits for window space at most this long

    def gettimeout(self) -> float | None:
        return self._timeout

    def getpeername(self) -> object:
        return self.chan.getpeername()

    def shutdown(self, how: int) -> None:
        self.chan.shutdown(how)

    def close(self) -> None:
        self._buf, self._pos = b"", 0
        self.chan.close()

    @property
    def closed(self) -> bool:
        return self.chan.closed

    @property
    def _closed(self) -> bool:  # Transport.stop_thread looks at sock._closed, as on a socket.socket
        return self.chan.closed
