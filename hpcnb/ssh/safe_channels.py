"""paramiko's channel bookkeeping made safe for a connection that many threads use at once.

A kept login (hpcnb.keeper) runs the commands of many hpcnb processes on one connection, and a
tunnel carries a browser's connections as channels of one; two races in paramiko each ended the
whole connection under that load (testbed, 16 threads running `ls` on one login: the connection
was gone within seconds, every time):

1. Nothing is sent on a channel after its CHANNEL_CLOSE. paramiko's Channel checks that it is
   open under its lock, but sends outside it (Channel._send, Channel.shutdown: holding it could
   deadlock a key exchange), so a thread's data or EOF could follow the CLOSE that paramiko's own
   thread sent meanwhile, answering the server's (a command that ends at once, a Jupyter that
   closes a connection). OpenSSH has freed the channel by then, takes the message as a protocol
   error and drops the connection ("Disconnecting user ...: ieof packet referred to nonexistent
   channel 3", sshd's log). RFC 4254 section 5.3: after sending CHANNEL_CLOSE, a party must not
   send more messages on the channel. So such a message is dropped here, under the lock every
   send holds (paramiko's clear_to_send_lock), which is what makes the check and the send one step.
   Left as paramiko has it: a thread stalled from its check until the server has freed the id
   and given it to a channel we opened next (a whole round trip) would still send on the new one.
   Channels the server opens to us (remote forwarding, agent, X11) are not followed: hpcnb asks
   for none, and paramiko refuses them.
2. A refused channel open is told to the thread that asked. paramiko keeps a refusal
   (CHANNEL_OPEN_FAILURE) in one transport-wide slot, saved_exception, that the waiting thread
   reads and clears (Transport.open_channel, get_exception). With two refusals at once (MaxSessions
   is 10 by default) one thread took the other's and the other found the slot empty:
   SSHException("Unable to open channel."), which reads as a dead connection.

Both hook private methods that paramiko 3.4 through 5.x keep unchanged: _send_message (every
packet after authentication goes through it), _next_channel (open_channel's, in the asking
thread), and the handlers paramiko's thread calls through its per-instance table.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import paramiko
from paramiko.common import (
    CONNECTION_FAILED_CODE,
    MSG_CHANNEL_CLOSE,
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_EOF,
    MSG_CHANNEL_EXTENDED_DATA,
    MSG_CHANNEL_FAILURE,
    MSG_CHANNEL_REQUEST,
    MSG_CHANNEL_SUCCESS,
    MSG_CHANNEL_WINDOW_ADJUST,
)
from paramiko.message import Message

CLOSED_PRUNE_AT = 4096  # closed ids kept before the old ones are dropped
CLOSED_KEPT_S = 60.0

# The messages that name the recipient's channel first and are sent only while it is open (RFC
# 4254 section 5); CHANNEL_OPEN_CONFIRMATION and _FAILURE answer an open and are not among them.
_ON_AN_OPEN_CHANNEL = frozenset({
    MSG_CHANNEL_WINDOW_ADJUST, MSG_CHANNEL_DATA, MSG_CHANNEL_EXTENDED_DATA, MSG_CHANNEL_EOF,
    MSG_CHANNEL_CLOSE, MSG_CHANNEL_REQUEST, MSG_CHANNEL_SUCCESS, MSG_CHANNEL_FAILURE,
})


class ThreadSafeChannels(paramiko.Transport):
    """A paramiko.Transport base: no message after a channel's CLOSE, each refusal to its asker."""

    _asking = threading.local()  # the channel id open_channel is waiting for, per thread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The server's ids of channels we have sent CHANNEL_CLOSE on, and when; an id leaves when
        # the server confirms it for a channel we opened (OpenSSH takes the lowest free one) or,
        # against a server that never reuses them, once it is CLOSED_KEPT_S old (_forget_old).
        self._closed_ids: dict[int, float] = {}
        self._refusals: dict[int, paramiko.ChannelException] = {}
        self._waiting: set[int] = set()  # our ids of opens a thread still waits for

    # --- 1. nothing after CLOSE ---------------------------------------------------------------
    def _send_message(self, data: Message) -> None:
        raw = data.asbytes()  # BytesIO.getvalue: the buffer itself, no copy (~35 ns for 32 KiB)
        kind = raw[0] if raw else None
        if kind in _ON_AN_OPEN_CHANNEL:
            recipient = int.from_bytes(raw[1:5], "big")
            if recipient in self._closed_ids:
                return  # the peer may have freed the channel: this message would end the connection
            if kind == MSG_CHANNEL_CLOSE:
                self._closed_ids[recipient] = time.monotonic()
                if len(self._closed_ids) > CLOSED_PRUNE_AT:
                    self._forget_old()
        super()._send_message(data)

    def _forget_old(self) -> None:
        """Drop ids closed long ago: a message that a thread built before the CLOSE is sent within
        moments of it, never a minute later (under the send lock: no other writer)."""
        old = time.monotonic() - CLOSED_KEPT_S
        for chanid, closed_at in list(self._closed_ids.items()):  # in place: paramiko's thread pops
            if closed_at < old:
                self._closed_ids.pop(chanid, None)

    def _parse_channel_open_success(self, m: Message) -> None:
        at = m.packet.tell()
        m.get_int()  # our id
        self._closed_ids.pop(m.get_int(), None)  # the server's id, now a new channel's
        m.packet.seek(at)
        super()._parse_channel_open_success(m)

    # --- 2. each refusal to its asker ----------------------------------------------------------
    def open_channel(self, *args: Any, **kwargs: Any) -> paramiko.Channel:
        self._asking.chanid = None
        try:
            return super().open_channel(*args, **kwargs)
        except paramiko.SSHException:
            refusal = self._refusals.pop(self._asking.chanid, None)
            if refusal is not None:
                raise refusal from None
            raise
        finally:
            self._waiting.discard(self._asking.chanid)  # a refusal after a timeout is not kept
            self._refusals.pop(self._asking.chanid, None)  # when paramiko's slot had the right one

    def _next_channel(self) -> int:
        chanid: int = super()._next_channel()  # in open_channel, in the asking thread, under self.lock
        self._asking.chanid = chanid
        self._waiting.add(chanid)
        return chanid

    def _parse_channel_open_failure(self, m: Message) -> None:
        at = m.packet.tell()
        chanid, reason = m.get_int(), m.get_int()
        m.packet.seek(at)
        if chanid in self._waiting:  # a thread still waits for it (not one that timed out)
            self._refusals[chanid] = paramiko.ChannelException(
                reason, CONNECTION_FAILED_CODE.get(reason, "(unknown code)"))
        super()._parse_channel_open_failure(m)
