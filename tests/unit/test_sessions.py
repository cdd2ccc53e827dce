"""hpcnb.ssh.sessions: when a refused session open waits and tries again."""

from __future__ import annotations

import threading
import time

from hpcnb.ssh.sessions import SETTLE_S, SessionSlots


def test_refused_with_none_of_ours_held_is_the_servers_answer_at_once() -> None:
    slots = SessionSlots()
    since = slots.opening()
    started = time.monotonic()
    assert slots.refused(since, deadline=time.monotonic() + 30) is False
    assert time.monotonic() - started < 1.0
    assert slots.held == 0


def test_refused_while_ours_are_held_waits_for_one_to_end() -> None:
    slots = SessionSlots()
    slots.opening()  # another command's session, granted
    since = slots.opening()
    threading.Timer(0.05, slots.closed).start()
    assert slots.refused(since, deadline=time.monotonic() + 30) is True
    assert slots.held == 0 and slots.ended == 1


def test_refused_while_ours_are_held_gives_up_at_the_deadline() -> None:
    slots = SessionSlots()
    slots.opening()
    since = slots.opening()
    assert slots.refused(since, deadline=time.monotonic() + 0.05) is False


def test_refused_just_after_ours_ended_tries_again_until_sshd_has_caught_up() -> None:
    now = [100.0]
    slots = SessionSlots(clock=lambda: now[0])
    slots.opening()
    slots.closed()  # ended at 100: sshd may still count it
    since = slots.opening()
    assert slots.refused(since, deadline=200.0) is True
    now[0] += SETTLE_S
    since = slots.opening()
    assert slots.refused(since, deadline=200.0) is False


def test_a_lasting_session_is_not_waited_for_but_its_end_is_seen() -> None:
    slots = SessionSlots()
    slots.opening()
    slots.lasting()  # a shell: open for hours
    since = slots.opening()
    started = time.monotonic()
    assert slots.refused(since, deadline=time.monotonic() + 30) is False  # at once
    assert time.monotonic() - started < 1.0
    slots.closed(lasting=True)
    assert slots.held == 0 and slots.ended == 1
