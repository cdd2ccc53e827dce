"""hpcnb.ssh.safe_channels: which channel messages reach the packetizer (no server needed)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import paramiko
import pytest
from paramiko.common import (
    cMSG_CHANNEL_CLOSE,
    cMSG_CHANNEL_DATA,
    cMSG_CHANNEL_EOF,
    cMSG_CHANNEL_OPEN_FAILURE,
    cMSG_CHANNEL_OPEN_SUCCESS,
    cMSG_IGNORE,
)
from paramiko.message import Message

from hpcnb.ssh.safe_channels import ThreadSafeChannels


@pytest.fixture
def transport() -> Iterator[tuple[ThreadSafeChannels, list[bytes]]]:
    ours, theirs = socket.socketpair()
    t = ThreadSafeChannels(ours)  # never started: only its bookkeeping is used
    sent: list[bytes] = []
    t.packetizer.send_message = lambda m: sent.append(m.asbytes())  # type: ignore[method-assign]
    yield t, sent
    ours.close()
    theirs.close()


def message(kind: bytes, *ints: int) -> Message:
    m = Message()
    m.add_byte(kind)
    for i in ints:
        m.add_int(i)
    return m


def payload(kind: bytes, *ints: int) -> Message:
    """A message as paramiko's thread hands it to a handler: after its type byte."""
    return Message(message(kind, *ints).asbytes()[1:])


def test_nothing_after_close_on_that_channel_only(transport) -> None:
    t, sent = transport
    t._send_message(message(cMSG_CHANNEL_DATA, 3))
    t._send_message(message(cMSG_CHANNEL_CLOSE, 3))
    t._send_message(message(cMSG_CHANNEL_EOF, 3))  # a thread that was on its way: dropped
    t._send_message(message(cMSG_CHANNEL_DATA, 3))
    t._send_message(message(cMSG_CHANNEL_CLOSE, 3))
    t._send_message(message(cMSG_CHANNEL_DATA, 4))  # another channel
    t._send_message(message(cMSG_IGNORE))  # not a channel's
    assert [m[:5] for m in sent] == [
        message(cMSG_CHANNEL_DATA, 3).asbytes(), message(cMSG_CHANNEL_CLOSE, 3).asbytes(),
        message(cMSG_CHANNEL_DATA, 4).asbytes()[:5], message(cMSG_IGNORE).asbytes()]


def test_an_id_the_server_gives_a_new_channel_is_open_again(transport) -> None:
    t, sent = transport
    t._send_message(message(cMSG_CHANNEL_CLOSE, 3))
    # The server confirms our channel 0 with its id 3 (paramiko warns: no such channel of ours).
    t._parse_channel_open_success(payload(cMSG_CHANNEL_OPEN_SUCCESS, 0, 3, 65536, 32768))
    t._send_message(message(cMSG_CHANNEL_DATA, 3))
    assert len(sent) == 2


def refusal(chanid: int) -> Message:
    m = message(cMSG_CHANNEL_OPEN_FAILURE, chanid, 2)
    m.add_string("no more sessions")
    m.add_string("")
    return Message(m.asbytes()[1:])


def test_a_refusal_is_kept_for_the_thread_that_waits_for_it_only(transport) -> None:
    t, _ = transport
    t._parse_channel_open_failure(refusal(7))  # an open that timed out: nobody waits
    assert t._refusals == {}
    t._waiting.add(8)
    t._parse_channel_open_failure(refusal(8))
    assert isinstance(t._refusals[8], paramiko.ChannelException) and t._refusals[8].code == 2
