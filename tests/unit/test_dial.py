"""hpcnb.ssh.dial: a name with several addresses (round-robin login nodes), on loopback addresses.

A refused address is a closed port; a silent one (a dead node that drops packets) is a listener
whose accept queue is full, so the kernel drops the SYN and the connect waits.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from hpcnb.errors import SSHError
from hpcnb.ssh import dial
from hpcnb.ssh.transport import tcp_socket


@contextlib.contextmanager
def listening(addr: str) -> Iterator[int]:
    with socket.socket() as srv:
        srv.bind((addr, 0))
        srv.listen(8)
        yield srv.getsockname()[1]


@contextlib.contextmanager
def silent(addr: str, port: int) -> Iterator[None]:
    """addr:port accepts nothing: a listener with backlog 0 and its one queue slot taken."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(0)
    fillers = []
    try:
        for _ in range(2):  # Linux queues backlog + 1
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex((addr, port))
            fillers.append(filler)
        time.sleep(0.05)
        yield
    finally:
        for filler in fillers:
            filler.close()
        srv.close()


NO_SUCH_FAMILY = 4242  # what socket() refuses: an address family this laptop lacks (IPv6 off)


@pytest.fixture
def name_with(monkeypatch):
    """Make `login.example` resolve to the given loopback addresses, in that order ("v6" stands for
    an address of a family the laptop cannot make a socket of)."""
    def set_addresses(*addrs: str) -> None:
        def fake(host, port, *args, **kwargs):
            if host != "login.example":
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(NO_SUCH_FAMILY if a == "v6" else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (a, int(port))) for a in addrs]
        monkeypatch.setattr(dial.socket, "getaddrinfo", fake)
    return set_addresses


def test_the_first_address_that_answers_is_used(name_with):
    with listening("127.0.0.2") as port:
        name_with("127.0.0.2", "127.0.0.3")
        with dial.connect("login.example", port, 5) as sock:
            assert sock.getpeername() == ("127.0.0.2", port)
            assert sock.gettimeout() == 5


def test_a_refused_address_moves_on_at_once(name_with):
    with listening("127.0.0.3") as port:
        name_with("127.0.0.2", "127.0.0.3")  # nothing listens on 127.0.0.2:port
        started = time.monotonic()
        with dial.connect("login.example", port, 30, attempt_delay=20) as sock:
            assert sock.getpeername() == ("127.0.0.3", port)
        assert time.monotonic() - started < 10  # not the 20 s attempt delay


def test_an_address_of_a_family_the_laptop_lacks_is_skipped(name_with):
    with listening("127.0.0.3") as port:
        name_with("v6", "127.0.0.3")
        with dial.connect("login.example", port, 5) as sock:
            assert sock.getpeername() == ("127.0.0.3", port)


def test_a_silent_address_is_not_waited_out(name_with):
    with listening("127.0.0.3") as port, silent("127.0.0.2", port):
        name_with("127.0.0.2", "127.0.0.3")
        started = time.monotonic()
        with dial.connect("login.example", port, 30, attempt_delay=0.1) as sock:
            assert sock.getpeername() == ("127.0.0.3", port)
        assert time.monotonic() - started < 15  # not the 30 s connect timeout


def test_every_address_failing_names_each_with_its_reason(name_with):
    with listening("127.0.0.4") as port, silent("127.0.0.3", port):
        name_with("127.0.0.2", "127.0.0.3")
        with pytest.raises(SSHError) as err:
            tcp_socket("login.example", port, 0.3)
    assert str(err.value) == (f"cannot connect to login.example port {port}, at none of its 2 addresses: "
                              "127.0.0.2 connection refused; 127.0.0.3 timed out after 0.3 s")


def test_one_address_keeps_the_short_message(name_with):
    with listening("127.0.0.3") as port:
        name_with("127.0.0.2")
        with pytest.raises(SSHError) as err:
            tcp_socket("login.example", port, 1)
    assert str(err.value) == f"cannot connect to login.example port {port}: connection refused"


def test_an_unknown_name_says_so(name_with):
    name_with("127.0.0.2")
    with pytest.raises(SSHError) as err:
        tcp_socket("nosuch.example", 22, 1)
    assert str(err.value).startswith("cannot connect to nosuch.example port 22: unknown host name (")


def test_the_login_socket_has_nagle_off_and_keepalive_on(name_with):
    with listening("127.0.0.2") as port:
        name_with("127.0.0.2")
        with tcp_socket("login.example", port, 5) as sock:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
