"""Opening a route (hpcnb.ssh.route) hop by hop, sharing live links within one process.

Within one process a live link to the same route (a ProxyJump chain) is shared by refcount (like
OpenSSH's ControlMaster), so a command that needs the login host twice (a node-ssh tunnel) logs
in, and prompts, once. A route whose first hops are already open reuses them.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Sequence

import paramiko

from hpcnb.errors import SSHError
from hpcnb.ssh import auth
from hpcnb.ssh.route import Hop
from hpcnb.ssh.transport import Login, SSHTransport, open_tcp, open_transport, peer_address, tcp_socket


class Link:
    """One authenticated transport and the link it rides on (ProxyJump), shared by refcount."""

    def __init__(self, key: tuple, transport: SSHTransport, via: Link | None) -> None:
        self.key, self.transport, self.via, self.refs = key, transport, via, 1

    def alive(self) -> bool:
        return self.transport.is_active() and (self.via is None or self.via.alive())

    def first_peer(self) -> str | None:
        """The address the route's first TCP connection reached (None through a ProxyCommand)."""
        first = self
        while first.via is not None:
            first = first.via
        return peer_address(first.transport.sock)

    def release(self) -> None:
        with _LINKS_LOCK:
            self.refs -= 1
            if self.refs > 0:
                return
            if _LINKS.get(self.key) is self:
                del _LINKS[self.key]
        self.transport.close()
        if self.via is not None:
            self.via.release()


_LINKS: dict[tuple, Link] = {}
_LINKS_LOCK = threading.Lock()


def _hop_key(hop: Hop) -> tuple:
    return (hop.hostname, hop.port, hop.user, hop.proxy_command)


def _first_socket(hop: Hop, timeout: float) -> socket.socket | paramiko.ProxyCommand:
    if not hop.proxy_command:
        return tcp_socket(hop.hostname, hop.port, timeout)
    try:
        return paramiko.ProxyCommand(hop.proxy_command)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise SSHError(f"ProxyCommand for {hop.alias} failed to start: {exc}",
                       hint=f"the command was: {hop.proxy_command}") from exc


def _reuse(keys: list[tuple]) -> tuple[Link | None, int]:
    """The longest live prefix of the route (one more reference on it) and where to go on from."""
    with _LINKS_LOCK:
        for i in range(len(keys) - 1, -1, -1):
            found = _LINKS.get(keys[i])
            if found is not None and found.alive():
                found.refs += 1
                return found, i + 1
    return None, 0


def open_route(hops: Sequence[Hop], timeout: float, prompt: auth.PromptHandler | None, *,
               share: bool = True) -> tuple[Link, Login]:
    """A link to the last hop (one reference, the caller's) and how it logged in. With share, live
    links of the route's prefixes are reused and the new ones offered to later callers."""
    keys = [tuple(_hop_key(h) for h in hops[: i + 1]) for i in range(len(hops))]
    link, start = _reuse(keys) if share else (None, 0)
    passphrases: dict[str, str] = {}  # one command asks for a key's passphrase once
    logins = [Login.for_hop(hop, prompt, timeout, passphrases) for hop in hops]
    try:
        for i in range(start, len(hops)):
            hop, login = hops[i], logins[i]
            if link is None:
                sock = _first_socket(hop, login.timeout)
            else:
                try:
                    sock = open_tcp(link.transport, hops[i - 1].hostname, hop.hostname, hop.port,
                                    timeout=login.timeout)
                except SSHError as exc:
                    raise SSHError(f"cannot reach {hop.hostname} port {hop.port} through "
                                   f"{hops[i - 1].alias}: {exc}") from exc
            try:
                transport = open_transport(sock, hop.hostname, hop.port, list(hop.key_names), login)
            except SSHError:
                sock.close()
                raise
            link = Link(keys[i], transport, link)  # the reference on the previous link is now via's
            if share:
                with _LINKS_LOCK:
                    _LINKS[keys[i]] = link
    except BaseException:
        if link is not None:
            link.release()
        raise
    assert link is not None
    return link, logins[-1]
