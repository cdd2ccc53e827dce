"""The SSH transport layer: one authenticated paramiko Transport per hop; links shared in a process.

Built on paramiko.Transport directly (never SSHClient + AutoAddPolicy): the host key is checked
against known_hosts after key exchange and before any authentication is attempted.

Within one process a live link to the same route (a ProxyJump chain from hpcnb.sshconfig) is
shared by refcount (like OpenSSH's ControlMaster), so a command that needs the login host twice
(a node-ssh tunnel) logs in, and prompts, once. SSHRemote (hpcnb.ssh) is the API over this.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN
from paramiko.message import Message

from hpcnb import auth, hostkeys, sshconfig
from hpcnb.chanio import ChannelSocket
from hpcnb.errors import SSHError

# AES-GCM first: one pass for cipher + MAC, by far the cheapest per byte in paramiko (its default
# list puts GCM last). CTR+HMAC as fallback for servers without GCM.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
    "aes192-ctr",
)
WINDOW_SIZE = 16 * 1024 * 1024  # receive window per channel: keeps a fast link full
# Largest channel data packet we let the server send (what we advertise when opening a channel).
# OpenSSH uses 32 KiB for its own forwarded channels but accepts packets up to 256 KiB
# (PACKET_MAX_SIZE) and sends up to what the peer advertises; each packet costs paramiko a fixed
# overhead in Python, so bigger ones mean fewer. Testbed, direct mode, 256 MiB through `hpcnb attach`,
# 2 CPUs, 3 interleaved rounds, medians: 32 KiB 295 MB/s, 128 KiB 497 MB/s (OpenSSH `ssh -L` 446).
# hpcnb.tunnel's STREAM_READ (a read that large means a download is streaming) stays <= one packet.
MAX_PACKET_SIZE = 128 * 1024
KEEPALIVE_S = sshconfig.DEFAULT_KEEPALIVE_S
STREAMLOCAL = "direct-streamlocal@openssh.com"


class SSHTransport(paramiko.Transport):
    """paramiko.Transport that can also open OpenSSH `direct-streamlocal@openssh.com` channels.

    paramiko has no helper for this channel type (paramiko#544). OpenSSH PROTOCOL section 2.4
    defines it as a CHANNEL_OPEN whose type-specific part is `string socket path, string reserved
    (""), uint32 reserved (0)`. Transport.open_channel() writes the generic part (type, id, window,
    packet size) for unknown types and then does all the waiting and error handling, so we reuse it
    and add the three fields in one private hook: `Transport._send_user_message(data)`, which
    open_channel calls in the calling thread with the Message it built. That hook is the only
    paramiko internal used (present and unchanged from paramiko 2.x through 5.x).
    """

    _pending = threading.local()

    def open_streamlocal(self, path: str, timeout: float | None = None) -> paramiko.Channel:
        self._pending.path = path
        try:
            return self.open_channel(STREAMLOCAL, timeout=timeout)
        finally:
            self._pending.path = None

    def _send_user_message(self, data: Message) -> None:
        path = getattr(self._pending, "path", None)
        if path is not None and isinstance(data, Message):
            head = Message()
            head.add_byte(cMSG_CHANNEL_OPEN)
            head.add_string(STREAMLOCAL)
            if data.asbytes().startswith(head.asbytes()):
                self._pending.path = None
                data.add_string(path)
                data.add_string("")
                data.add_int(0)
        super()._send_user_message(data)


def _connect_error(host: str, port: int, exc: OSError, timeout: float) -> SSHError:
    if isinstance(exc, socket.gaierror):
        why = f"unknown host name ({exc.strerror})"
    elif isinstance(exc, ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(exc, TimeoutError):
        why = f"timed out after {timeout:g} s"
    else:
        why = (exc.strerror or str(exc)).lower()
    return SSHError(f"cannot connect to {host} port {port}: {why}")


def tcp_socket(host: str, port: int, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise _connect_error(host, port, exc, timeout) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


@dataclass(frozen=True)
class Login:
    """How to log in; shared by a connection and the hops made through it."""

    user: str
    creds: auth.Credentials
    known: hostkeys.KnownHosts
    timeout: float
    accept_new_host_key: bool
    keepalive: int = KEEPALIVE_S


def open_transport(
    sock: socket.socket | paramiko.Channel, host: str, port: int, names: list[str], login: Login
) -> SSHTransport:
    timeout = login.timeout
    # A hop carried over a channel (jump, ProxyJump): paramiko would read the Channel itself a few
    # bytes at a time, each read costing O(buffered); ChannelSocket reads it in one go (chanio.py).
    wire = ChannelSocket(sock) if isinstance(sock, paramiko.Channel) else sock
    transport = SSHTransport(wire, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
    opts = transport.get_security_options()
    opts.ciphers = tuple(c for c in CIPHERS if c in opts.ciphers) + tuple(
        c for c in opts.ciphers if c not in CIPHERS
    )
    opts.key_types = tuple(login.known.preferred_algorithms(names, opts.key_types))
    transport.banner_timeout = timeout
    transport.auth_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        server_key = transport.get_remote_server_key()
        login.known.verify(names, server_key, accept_new=login.accept_new_host_key)
        auth.authenticate(transport, host, login.user, login.creds)
    except SSHError:  # includes HostKeyError
        transport.close()
        raise
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        detail = str(exc) or type(exc).__name__
        raise SSHError(f"SSH handshake with {host} port {port} failed: {detail}") from exc
    if login.keepalive > 0:
        transport.set_keepalive(login.keepalive)
    return transport


class Link:
    """One authenticated transport and the link it rides on (ProxyJump), shared by refcount."""

    def __init__(self, key: tuple, transport: SSHTransport, via: Link | None, keepalive: int) -> None:
        self.key, self.transport, self.via, self.keepalive, self.refs = key, transport, via, keepalive, 1

    def alive(self) -> bool:
        return self.transport.is_active() and (self.via is None or self.via.alive())

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


def _hop_key(hop: sshconfig.Hop) -> tuple:
    return (hop.hostname, hop.port, hop.user, hop.proxy_command)


def _first_socket(hop: sshconfig.Hop, timeout: float) -> socket.socket | paramiko.ProxyCommand:
    if not hop.proxy_command:
        return tcp_socket(hop.hostname, hop.port, timeout)
    try:
        return paramiko.ProxyCommand(hop.proxy_command)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise SSHError(f"ProxyCommand for {hop.alias} failed to start: {exc}",
                       hint=f"the command was: {hop.proxy_command}") from exc


def open_route(hops: Sequence[sshconfig.Hop], timeout: float, prompt: auth.PromptHandler | None
                ) -> tuple[Link, Login]:
    """A link to the last hop (one reference, the caller's), reusing live links of its prefixes."""
    keys = [tuple(_hop_key(h) for h in hops[: i + 1]) for i in range(len(hops))]
    link: Link | None = None
    start = 0
    with _LINKS_LOCK:
        for i in range(len(hops) - 1, -1, -1):
            found = _LINKS.get(keys[i])
            if found is not None and found.alive():
                found.refs += 1
                link, start = found, i + 1
                break
    passphrases: dict[str, str] = {}
    login: Login | None = None
    try:
        for i in range(start, len(hops)):
            hop = hops[i]
            hop_timeout = hop.connect_timeout or timeout
            creds = auth.Credentials(hop.identity_files, hop.identities_only, True, prompt, passphrases)
            login = Login(hop.user, creds, hostkeys.KnownHosts(hop.known_hosts), hop_timeout,
                           hop.accept_new, hop.keepalive)
            if link is None:
                sock = _first_socket(hop, hop_timeout)
            else:
                try:
                    sock = open_tcp(link.transport, hops[i - 1].hostname, hop.hostname, hop.port,
                                    timeout=hop_timeout)
                except SSHError as exc:
                    raise SSHError(f"cannot reach {hop.hostname} port {hop.port} through "
                                   f"{hops[i - 1].alias}: {exc}") from exc
            try:
                transport = open_transport(sock, hop.hostname, hop.port, list(hop.key_names), login)
            except SSHError:
                sock.close()
                raise
            new = Link(keys[i], transport, link, hop.keepalive)
            link = new  # the reference on the previous link is now new.via's
            with _LINKS_LOCK:
                _LINKS[keys[i]] = new
    except BaseException:
        if link is not None:
            link.release()
        raise
    if login is None:  # the whole route was already open
        hop = hops[-1]
        creds = auth.Credentials(hop.identity_files, hop.identities_only, True, prompt, passphrases)
        login = Login(hop.user, creds, hostkeys.KnownHosts(hop.known_hosts), timeout,
                       hop.accept_new, hop.keepalive)
    assert link is not None
    return link, login


def open_tcp(transport: paramiko.Transport, where: str, host: str, port: int, *, timeout: float
             ) -> paramiko.Channel:
    """A direct-tcpip channel from `where` (the transport's host) to host:port (what `ssh -L` uses)."""
    try:
        return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        raise SSHError(f"{where} could not open a connection to {host} port {port}: {exc.text}") from exc
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SSHError(f"connection to {where} lost: {exc or type(exc).__name__}") from exc
