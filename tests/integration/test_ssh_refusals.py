"""Many threads on one login (a real sshd on loopback): refused opens, commands ending at once,
opens answered by a callback.

paramiko hands a refusal to the waiting thread through one transport-wide slot; under concurrent
refusals a thread found it empty and read "Unable to open channel.", which hpcnb took for a dead
login (hpcnb.ssh.transport, SSHTransport.open_channel).
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import paramiko
import pytest
from paramiko.common import MSG_CHANNEL_OPEN_SUCCESS
from sshd_fixture import FEW_SESSIONS, FEW_SESSIONS_ADDR, Sshd, free_port

from hpcnb.errors import SSHError
from hpcnb.ssh import SSHRemote


def login(sshd: Sshd, address: str = "127.0.0.1") -> SSHRemote:
    name = sshd.host_name if address == "127.0.0.1" else f"[{address}]:{sshd.port}"
    return SSHRemote.connect(address, sshd.port, sshd.user, str(sshd.client_key),
                             [str(sshd.known_hosts(name))], allow_agent=False)


def test_each_of_many_refusals_at_once_is_its_own_and_the_login_lives(sshd: Sshd) -> None:
    remote = login(sshd)
    closed = free_port()  # nothing listens: sshd refuses each direct-tcpip open at once

    def refused(_: int) -> str:
        with pytest.raises(SSHError) as err:
            remote.open_tcp("127.0.0.1", closed)
        return str(err.value)

    try:
        for _ in range(5):
            with ThreadPoolExecutor(32) as pool:
                said = list(pool.map(refused, range(64)))
            assert all("could not open a connection" in s and "Connect failed" in s for s in said), \
                sorted(set(said))
            assert remote.is_alive()
        assert remote.run(["true"]).exit_status == 0
    finally:
        remote.close()


def test_many_threads_running_short_commands_on_one_login(sshd: Sshd) -> None:
    """Commands that end before reading their stdin: sshd closes each channel while another
    thread may still send on it (its stdin, its EOF). Before hpcnb.ssh.safe_channels the login
    died within seconds ("ieof packet referred to nonexistent channel", sshd's log)."""
    remote = login(sshd)

    def run(i: int) -> tuple[int, str]:
        result = remote.run(["echo", f"n{i}"], stdin="unread\n" * (i % 3) * 50)
        return result.exit_status, result.stdout

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(run, range(800)))
        assert results == [(0, f"n{i}\n") for i in range(800)]
        assert remote.is_alive()
    finally:
        remote.close()


def test_commands_beyond_max_sessions_wait_for_a_session(sshd: Sshd) -> None:
    """sshd allows FEW_SESSIONS sessions on a connection to FEW_SESSIONS_ADDR: twelve commands at
    once each wait for one of the others to end (hpcnb.ssh.sessions), none is refused."""
    remote = login(sshd, FEW_SESSIONS_ADDR)
    try:
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda i: remote.run(["sh", "-c", f"sleep 0.3; echo {i}"]),
                                    range(24)))
        assert [(r.exit_status, r.stdout) for r in results] == [(0, f"{i}\n") for i in range(24)]
        assert "no more sessions" in sshd.log()  # the limit was met, and waited for
    finally:
        remote.close()


def test_a_command_that_waited_for_a_session_gets_its_whole_timeout(sshd: Sshd) -> None:
    """The wait for a session comes before the command's own timeout: a command that waited most
    of its timeout and then ran is its answer, never a timeout (a submit that ran, told as failed,
    would be submitted again)."""
    remote = login(sshd, FEW_SESSIONS_ADDR)
    try:
        with ThreadPoolExecutor(FEW_SESSIONS + 1) as pool:
            holders = [pool.submit(remote.run, ["sleep", "2.5"]) for _ in range(FEW_SESSIONS)]
            time.sleep(0.5)  # the holders have their sessions
            late = pool.submit(remote.run, ["sh", "-c", "sleep 1; echo ran"], timeout=3)
            assert late.result().stdout == "ran\n"
            assert all(h.result().exit_status == 0 for h in holders)
    finally:
        remote.close()


# --- a channel opened without a waiting thread (hpcnb.ssh.opens.open_channel_soon) -------------
class Answers:
    """open_channel_soon's callbacks: each answer, and the thread it came in."""

    def __init__(self) -> None:
        self.got: list[tuple[object, BaseException | None, str]] = []
        self.all_in = threading.Event()
        self.expected = 0

    def done(self, chan: object, error: BaseException | None) -> None:
        self.got.append((chan, error, threading.current_thread().name))
        if len(self.got) == self.expected:
            self.all_in.set()


def test_opens_answered_in_paramikos_thread_each_once(sshd: Sshd) -> None:
    """Opened and refused opens mixed, from many threads: each callback once, with its own answer
    (a refusal is that open's, as for open_channel), in paramiko's thread; the login lives."""
    remote = login(sshd)
    closed = free_port()
    with socket.create_server(("127.0.0.1", 0)) as server:
        listening = server.getsockname()[1]
        answers = [Answers() for _ in range(64)]
        for a in answers:
            a.expected = 1

        def open_one(i: int) -> bool:
            port = listening if i % 2 else closed
            return remote.transport.open_channel_soon(
                "direct-tcpip", ("127.0.0.1", port, "127.0.0.1", 0), answers[i].done)

        try:
            with ThreadPoolExecutor(16) as pool:
                assert all(pool.map(open_one, range(64)))
            for i, a in enumerate(answers):
                assert a.all_in.wait(10)
                [(chan, error, thread)] = a.got
                assert thread == remote.transport.name  # paramiko's own thread
                if i % 2:
                    assert error is None and isinstance(chan, paramiko.Channel) and chan.active
                    chan.close()
                else:
                    assert chan is None and isinstance(error, paramiko.ChannelException)
                    assert "Connect failed" in str(error)
            assert remote.is_alive()
        finally:
            remote.close()


def test_an_open_unanswered_when_the_login_ends_is_told_so(sshd: Sshd) -> None:
    remote = login(sshd)
    transport = remote.transport
    transport._handler_table[MSG_CHANNEL_OPEN_SUCCESS] = lambda _m: None  # the answer never comes
    answers = Answers()
    answers.expected = 1
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert transport.open_channel_soon(
            "direct-tcpip", ("127.0.0.1", server.getsockname()[1], "127.0.0.1", 0), answers.done)
        time.sleep(0.3)
        assert not answers.got
        remote.close()
        assert answers.all_in.wait(10)
    [(chan, error, _)] = answers.got
    assert chan is None and "connection lost" in str(error)
    assert not transport.open_channel_soon("direct-tcpip", ("127.0.0.1", 1, "127.0.0.1", 0), answers.done)


def test_an_open_unanswered_in_time_is_told_so_and_its_late_answer_closes_it(sshd: Sshd) -> None:
    remote = login(sshd)
    transport = remote.transport
    held: list[object] = []
    real = transport._handler_table[MSG_CHANNEL_OPEN_SUCCESS]
    transport._handler_table[MSG_CHANNEL_OPEN_SUCCESS] = held.append  # the answer is late
    answers = Answers()
    answers.expected = 1
    try:
        with socket.create_server(("127.0.0.1", 0)) as server:
            assert transport.open_channel_soon(
                "direct-tcpip", ("127.0.0.1", server.getsockname()[1], "127.0.0.1", 0), answers.done,
                timeout=0.3)
            [opened] = transport._opens.values()
            assert answers.all_in.wait(5)  # told by paramiko's thread, its socket quiet meanwhile
            [(chan, error, thread)] = answers.got
            assert chan is None and "no answer" in str(error) and thread == transport.name
            assert held  # the answer came, and was held back
            transport._handler_table[MSG_CHANNEL_OPEN_SUCCESS] = real
            real(held[0])  # now it arrives: the channel is closed, nobody is told twice
            assert opened.chan.closed and len(answers.got) == 1 and not transport._opens
            assert remote.run(["true"]).exit_status == 0
    finally:
        remote.close()
