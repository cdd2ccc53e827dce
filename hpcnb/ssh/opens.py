"""A channel opened with its answer handed to a callback: no thread waits for it.

A tunnel opens a channel per browser connection. With paramiko's open_channel a worker thread
sent CHANNEL_OPEN and slept until paramiko's thread woke it with the answer: two hand-overs
between threads per connection, on a JupyterLab load 100 at once. open_channel_soon sends the
open from the caller's thread and returns; paramiko's thread calls back with the answer.

`open_channel_soon` does what paramiko's Transport.open_channel does before it waits (the same
private names in paramiko 3.4 and 5.1: _sanitize_window_size, _next_channel, _channels,
channel_events, channels_seen, Channel._set_transport, _set_window), and hooks the answers'
handlers, which paramiko's thread calls through its per-instance table.

An open unanswered after its timeout is told as timed out; if its answer comes later, the
channel is closed at once (the server would keep it open otherwise). paramiko's own open_channel
leaves such a channel open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paramiko
from paramiko.common import CONNECTION_FAILED_CODE, cMSG_CHANNEL_OPEN
from paramiko.message import Message

# open_channel_soon's callback: (the open channel, None) or (None, why it is not open). Called
# once, never with a lock of paramiko's held; it must not block (paramiko's thread may call it).
OpenDone = Callable[[paramiko.Channel | None, BaseException | None], None]
LOST = "connection lost while opening a channel"


@dataclass
class _Open:
    chan: paramiko.Channel  # held here: paramiko's channel map holds channels weakly
    done: OpenDone | None  # None once told (timed out): a late answer only closes the channel
    deadline: float


class CallbackOpens(paramiko.Transport):
    """A paramiko.Transport base: open_channel_soon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opens: dict[int, _Open] = {}  # our ids of opens sent, not yet answered
        self._opens_ended = False  # run() has ended: no more opens are answered

    def open_channel_soon(self, kind: str, fields: tuple[str | int, ...], done: OpenDone, *,
                          window_size: int | None = None, timeout: float = 10.0) -> bool:
        """Send CHANNEL_OPEN for `kind` with its type-specific `fields` (RFC 4254 section 7.2:
        direct-tcpip's host, port, originator's host, port) and return. done(channel, None) or
        done(None, error) follows once: the server's answer, the connection's end, or `timeout`
        seconds without an answer (SSHException). False (done never called) when the connection
        has ended, or a key exchange is under way (sending would wait for it): open_channel then."""
        self._expire()
        with self.lock:  # as open_channel (paramiko transport.py) does before it waits
            if not self.active or self._opens_ended or not self.clear_to_send.is_set():
                return False
            window_size = self._sanitize_window_size(window_size)
            max_packet_size = self._sanitize_packet_size(None)
            # paramiko's own: a subclass's (hpcnb.ssh.safe_channels) counts a thread waiting for it.
            chanid = paramiko.Transport._next_channel(self)
            m = Message()
            m.add_byte(cMSG_CHANNEL_OPEN)
            m.add_string(kind)
            for value in (chanid, window_size, max_packet_size, *fields):
                if isinstance(value, int):
                    m.add_int(value)
                else:
                    m.add_string(value)
            chan = paramiko.Channel(chanid)
            self._channels.put(chanid, chan)
            self.channel_events[chanid] = threading.Event()  # paramiko sets and drops it on the answer
            self.channels_seen[chanid] = True
            chan._set_transport(self)
            chan._set_window(window_size, max_packet_size)
            self._opens[chanid] = _Open(chan, done, time.monotonic() + timeout)
        try:
            self._send_user_message(m)
        except BaseException:
            with self.lock:
                ours = self._opens.pop(chanid, None) is not None
                if ours:
                    self._channels.delete(chanid)
                    self.channel_events.pop(chanid, None)
            if ours:
                raise
            # The connection's end told done already (run): this open is answered.
        return True

    def _parse_channel_open_success(self, m: Message) -> None:
        at = m.packet.tell()
        chanid = m.get_int()
        m.packet.seek(at)
        super()._parse_channel_open_success(m)
        self._answer(chanid, None)

    def _parse_channel_open_failure(self, m: Message) -> None:
        at = m.packet.tell()
        chanid, reason = m.get_int(), m.get_int()
        m.packet.seek(at)
        super()._parse_channel_open_failure(m)
        if chanid in self._opens:
            with self.lock:
                self.saved_exception = None  # paramiko's slot for a waiting thread: none waits
            self._answer(chanid, paramiko.ChannelException(
                reason, CONNECTION_FAILED_CODE.get(reason, "(unknown code)")))

    def _answer(self, chanid: int, error: BaseException | None) -> None:
        with self.lock:
            opened = self._opens.pop(chanid, None)
        if opened is None:
            return
        if opened.done is None:  # told as timed out: nobody takes this channel
            if error is None:
                opened.chan.close()
            return
        self._tell(opened.done, None if error is not None else opened.chan, error)

    @staticmethod
    def _tell(done: OpenDone, chan: paramiko.Channel | None, error: BaseException | None) -> None:
        try:
            done(chan, error)
        except Exception:  # a bug in the callback must not end paramiko's thread and the connection
            logging.getLogger(__name__).exception("open_channel_soon's callback failed")

    def _expire(self) -> None:
        """Tell the opens past their deadline (at each new open, and when paramiko's thread has
        waited for its socket: hpcnb.ssh.transport)."""
        now, late = time.monotonic(), []
        with self.lock:
            for opened in self._opens.values():
                if opened.done is not None and opened.deadline < now:
                    late.append(opened.done)
                    opened.done = None
        for done in late:
            self._tell(done, None, paramiko.SSHException("no answer to the channel open in time"))

    def run(self) -> None:
        try:
            super().run()
        finally:
            with self.lock:
                self._opens_ended = True
                pending, self._opens = self._opens, {}
            for opened in pending.values():
                if opened.done is not None:
                    self._tell(opened.done, None, paramiko.SSHException(LOST))
