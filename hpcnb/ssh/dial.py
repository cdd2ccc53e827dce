"""The TCP connection to a login host whose name has several addresses (round-robin DNS).

Sites put several login nodes behind one name, and one of them is often down, or half down, while
the name still lists it. OpenSSH tries the addresses one after another and waits out ConnectTimeout
on each silent one (ssh_connect_direct in sshconnect.c). hpcnb starts on the next address when the
current one has not answered within ATTEMPT_DELAY_S, or at once when it fails, and keeps the first
connection made ("Happy Eyeballs", RFC 8305 section 5); the others are closed before a byte is sent.
Addresses are tried in the resolver's order, as OpenSSH does, so the site's rotation is kept.

Standard library only: non-blocking connects and one selector, no threads.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import sys
import time

# RFC 8305 recommends 250 ms between attempts (at least 100 ms, at most 2 s). One second, because a
# losing attempt is a connection the other login node's sshd logs ("Connection closed ... [preauth]")
# and counts against its MaxStartups, so it should happen only for a node that is really slow or
# down, not for a far site on a 300 ms path; a dead node costs one second, not the connect timeout.
ATTEMPT_DELAY_S = 1.0

_log = logging.getLogger("hpcnb.ssh.dial")


class DialError(OSError):
    """No address answered: each address tried and why it failed, in the order tried."""

    def __init__(self, host: str, failures: list[tuple[str, OSError]]) -> None:
        super().__init__("; ".join(f"{addr}: {exc.strerror or exc}" for addr, exc in failures))
        self.host, self.failures = host, failures


def several_addresses(host: str, port: int) -> bool:
    """Whether the name has more than one address (several login nodes behind it)."""
    try:
        return len(addresses(host, port)) > 1
    except OSError:
        return False


def addresses(host: str, port: int) -> list[tuple[int, int, int, tuple]]:
    """(family, type, proto, sockaddr) of each address, in the resolver's order, duplicates once.
    Raises socket.gaierror for an unknown name."""
    found: list[tuple[int, int, int, tuple]] = []
    for family, kind, proto, _name, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if (family, kind, proto, sockaddr) not in found:
            found.append((family, kind, proto, sockaddr))
    return found


def connect(host: str, port: int, timeout: float, *, attempt_delay: float = ATTEMPT_DELAY_S
            ) -> socket.socket:
    """The first TCP connection made to one of host's addresses, in blocking mode with `timeout`.
    Each attempt has `timeout` of its own (OpenSSH's ConnectTimeout is per address too). Raises
    socket.gaierror, or DialError with every address's failure (a TimeoutError for a silent one)."""
    targets = addresses(host, port)
    failures: list[tuple[str, OSError]] = []
    pending: dict[socket.socket, tuple[str, float]] = {}  # attempt -> (address, its deadline)
    selector = selectors.DefaultSelector()
    next_start = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if targets and (now >= next_start or not pending):
                family, kind, proto, sockaddr = targets.pop(0)
                started = _start(family, kind, proto, sockaddr)
                addr = str(sockaddr[0])
                if isinstance(started, OSError):
                    _log.debug("%s port %d: %s failed: %s", host, port, addr, started.strerror)
                    failures.append((addr, started))
                    next_start = now  # a refusal or an unreachable network: the next one at once
                    continue
                pending[started] = (addr, now + timeout)
                selector.register(started, selectors.EVENT_WRITE)
                next_start = now + attempt_delay
                continue
            if not pending:
                raise DialError(host, failures)
            wake = min(deadline for _addr, deadline in pending.values())
            if targets:
                wake = min(wake, next_start)
            for key, _events in selector.select(max(0.0, wake - now)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                addr, _deadline = pending.pop(sock)
                selector.unregister(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    _log.debug("%s port %d: connected to %s", host, port, addr)
                    sock.setblocking(True)
                    sock.settimeout(timeout)
                    return sock
                sock.close()
                _log.debug("%s port %d: %s failed: %s", host, port, addr, os.strerror(code))
                failures.append((addr, OSError(code, os.strerror(code))))
                next_start = time.monotonic()
            now = time.monotonic()
            for sock, (addr, deadline) in list(pending.items()):
                if now >= deadline:
                    del pending[sock]
                    selector.unregister(sock)
                    sock.close()
                    _log.debug("%s port %d: %s did not answer in %g s", host, port, addr, timeout)
                    failures.append((addr, TimeoutError(errno.ETIMEDOUT, f"timed out after {timeout:g} s")))
    finally:
        for sock in pending:
            sock.close()
        selector.close()


def _start(family: int, kind: int, proto: int, sockaddr: tuple) -> socket.socket | OSError:
    """A connect under way to one address, or why it failed at once."""
    try:
        # A family this laptop lacks (an AAAA record, IPv6 off) fails here: that address's failure.
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        return exc
    sock.setblocking(False)
    code = sock.connect_ex(sockaddr)
    # Under way: EINPROGRESS (POSIX), WSAEWOULDBLOCK (Windows, whose select reports a failed connect
    # as an exception, which selectors' SelectSelector counts as writable, so SO_ERROR is read too).
    # 0 (loopback can connect at once): the selector reports it writable.
    if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, getattr(errno, "WSAEWOULDBLOCK", -1)):
        return sock
    sock.close()
    return OSError(code, os.strerror(code))


# macOS has no TCP_USER_TIMEOUT; its own option, in seconds (xnu bsd/netinet/tcp.h):
# "time after which tcp retransmissions will be stopped and the connection will be dropped".
_DARWIN_TCP_RXT_CONNDROPTIME = 0x80


def drop_when_unanswered(sock: socket.socket, seconds: float) -> None:
    """Have the kernel drop the connection once bytes it sent go unacknowledged for `seconds`.

    A login node that dies (power, panic, its network) sends no FIN or RST: the connection stays
    established, and a kept login (hpcnb.keeper) would send every command into it until each timed
    out, while the name's other login nodes are fine. paramiko's keepalives expect no answer, so
    they alone never notice. With this (tcp(7) TCP_USER_TIMEOUT) they, like any command, end a dead
    connection after `seconds`, and the next login goes to whichever node answers. An ACK comes from
    the node's kernel, not from sshd, so a busy node is not taken for a dead one. hpcnb passes
    ServerAliveInterval x ServerAliveCountMax, which is when ssh(1) gives up on a server too.
    """
    with contextlib.suppress(OSError):  # an option this kernel lacks: keep the connection as it is
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))
        elif sys.platform == "darwin":
            sock.setsockopt(socket.IPPROTO_TCP, _DARWIN_TCP_RXT_CONNDROPTIME, int(seconds))
