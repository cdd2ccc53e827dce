"""SSHRemote: one authenticated paramiko Transport per host, host keys checked on every hop.

Built on paramiko.Transport directly (never SSHClient + AutoAddPolicy): the host key is checked
against known_hosts after key exchange and before any authentication is attempted.

from_config follows ~/.ssh/config (hpcnb.sshconfig): aliases, ProxyJump chains, ProxyCommand.
Within one process a live connection to the same route is shared (like OpenSSH's ControlMaster),
so a command that needs the login host twice (a node-ssh tunnel) logs in, and prompts, once.
"""

from __future__ import annotations

import getpass
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN
from paramiko.message import Message

from hpcnb import auth, hostkeys, sshconfig
from hpcnb.errors import CommandError, SSHError
from hpcnb.remote import CommandResult

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
MAX_PACKET_SIZE = 32768  # what OpenSSH itself uses for forwarded channels
KEEPALIVE_S = sshconfig.DEFAULT_KEEPALIVE_S
STREAMLOCAL = "direct-streamlocal@openssh.com"


class ClusterLike(Protocol):
    """What from_config needs of a ClusterConfig (hpcnb.config), by duck typing."""

    @property
    def login_host(self) -> str | None: ...
    @property
    def port(self) -> int: ...
    @property
    def user(self) -> str | None: ...
    @property
    def identity_file(self) -> str | None: ...
    @property
    def known_hosts(self) -> str | None: ...


class _Transport(paramiko.Transport):
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


def _tcp_socket(host: str, port: int, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise _connect_error(host, port, exc, timeout) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


@dataclass(frozen=True)
class _Login:
    """How to log in; shared by a connection and the hops made through it."""

    user: str
    creds: auth.Credentials
    known: hostkeys.KnownHosts
    timeout: float
    accept_new_host_key: bool
    keepalive: int = KEEPALIVE_S


def _handshake(
    sock: socket.socket | paramiko.Channel, host: str, port: int, names: list[str], login: _Login
) -> _Transport:
    timeout = login.timeout
    transport = _Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
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


class _Link:
    """One authenticated transport and the link it rides on (ProxyJump), shared by refcount."""

    def __init__(self, key: tuple, transport: _Transport, via: _Link | None, keepalive: int) -> None:
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


_LINKS: dict[tuple, _Link] = {}
_LINKS_LOCK = threading.Lock()


def _hop_key(hop: sshconfig.Hop) -> tuple:
    return (hop.hostname, hop.port, hop.user, hop.proxy_command)


def _first_socket(hop: sshconfig.Hop, timeout: float) -> socket.socket | paramiko.ProxyCommand:
    if not hop.proxy_command:
        return _tcp_socket(hop.hostname, hop.port, timeout)
    try:
        return paramiko.ProxyCommand(hop.proxy_command)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise SSHError(f"ProxyCommand for {hop.alias} failed to start: {exc}",
                       hint=f"the command was: {hop.proxy_command}") from exc


def _open_route(hops: Sequence[sshconfig.Hop], timeout: float, prompt: auth.PromptHandler | None
                ) -> tuple[_Link, _Login]:
    """A link to the last hop (one reference, the caller's), reusing live links of its prefixes."""
    keys = [tuple(_hop_key(h) for h in hops[: i + 1]) for i in range(len(hops))]
    link: _Link | None = None
    start = 0
    with _LINKS_LOCK:
        for i in range(len(hops) - 1, -1, -1):
            found = _LINKS.get(keys[i])
            if found is not None and found.alive():
                found.refs += 1
                link, start = found, i + 1
                break
    passphrases: dict[str, str] = {}
    login: _Login | None = None
    try:
        for i in range(start, len(hops)):
            hop = hops[i]
            hop_timeout = hop.connect_timeout or timeout
            creds = auth.Credentials(hop.identity_files, hop.identities_only, True, prompt, passphrases)
            login = _Login(hop.user, creds, hostkeys.KnownHosts(hop.known_hosts), hop_timeout,
                           hop.accept_new, hop.keepalive)
            if link is None:
                sock = _first_socket(hop, hop_timeout)
            else:
                via = SSHRemote(link.transport, host=hops[i - 1].hostname, port=hops[i - 1].port,
                                user=hops[i - 1].user, login=login)
                try:
                    sock = via.open_tcp(hop.hostname, hop.port, timeout=hop_timeout)
                except SSHError as exc:
                    raise SSHError(f"cannot reach {hop.hostname} port {hop.port} through "
                                   f"{hops[i - 1].alias}: {exc}") from exc
            try:
                transport = _handshake(sock, hop.hostname, hop.port, list(hop.key_names), login)
            except SSHError:
                sock.close()
                raise
            new = _Link(keys[i], transport, link, hop.keepalive)
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
        login = _Login(hop.user, creds, hostkeys.KnownHosts(hop.known_hosts), timeout,
                       hop.accept_new, hop.keepalive)
    assert link is not None
    return link, login


class SSHRemote:
    """The Remote protocol (hpcnb.remote) over SSH, plus channels for the tunnel."""

    def __init__(
        self,
        transport: paramiko.Transport,
        *,
        host: str,
        port: int,
        user: str,
        login: _Login,
        parent: SSHRemote | None = None,
        link: _Link | None = None,
    ) -> None:
        self.transport = transport
        self.host, self.port, self.user = host, port, user
        self.parent = parent  # the login host a node hop (jump) goes through
        self._link = link  # shared: released, not closed, by close()
        self._shared = link is not None
        self.keepalive = login.keepalive
        self.route = f"{user}@{host}:{port}"
        self._children: list[SSHRemote] = []
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._lock = threading.Lock()
        self._login = login

    def __repr__(self) -> str:
        return f"SSHRemote({self.user}@{self.host}:{self.port})"

    # --- making connections -------------------------------------------------------------
    @classmethod
    def connect(
        cls,
        host: str,
        port: int = 22,
        user: str | None = None,
        identity_file: str | None = None,
        known_hosts_files: Sequence[str] | None = None,
        *,
        timeout: float = 10.0,
        accept_new_host_key: bool = False,
        allow_agent: bool = True,
        prompt_handler: auth.PromptHandler | None = auth.askpass_or_terminal,
    ) -> SSHRemote:
        """Connect, check the host key, authenticate. known_hosts_files: checked in order, the
        first is where an accepted new key is added (default ~/.ssh/known_hosts + system file).
        No ~/.ssh/config, no sharing: a connection of its own."""
        login = _Login(
            user or getpass.getuser(),
            auth.Credentials((identity_file,) if identity_file else (), False, allow_agent, prompt_handler),
            hostkeys.KnownHosts(known_hosts_files),
            timeout,
            accept_new_host_key,
        )
        sock = _tcp_socket(host, port, timeout)
        try:
            transport = _handshake(sock, host, port, [hostkeys.host_key_name(host, port)], login)
        except SSHError:
            sock.close()
            raise
        return cls(transport, host=host, port=port, user=login.user, login=login)

    @classmethod
    def from_config(
        cls,
        cfg: ClusterLike,
        *,
        timeout: float = 10.0,
        accept_new_host_key: bool = False,
        prompt_handler: auth.PromptHandler | None = auth.askpass_or_terminal,
    ) -> SSHRemote:
        """Connect to a ClusterConfig's login host, following ~/.ssh/config ($HPCNB_SSH_CONFIG):
        login_host may be an alias; ProxyJump hops come first. The cluster's known_hosts file is
        checked first on every hop (and receives accepted keys), then UserKnownHostsFile (default
        ~/.ssh/known_hosts) and the system file. Explicit cluster values win over ~/.ssh/config."""
        if not cfg.login_host:
            raise SSHError(f"cluster {getattr(cfg, 'name', '?')} has no login_host configured")
        port = cfg.port if cfg.port not in (None, 22) else None
        defaults = sshconfig.Defaults(user=cfg.user, port=port, identity_file=cfg.identity_file,
                                      known_hosts=cfg.known_hosts, accept_new=accept_new_host_key)
        hops = sshconfig.route(cfg.login_host, defaults)
        link, login = _open_route(hops, timeout, prompt_handler)
        last = hops[-1]
        remote = cls(link.transport, host=last.hostname, port=last.port, user=last.user, login=login,
                     link=link)
        remote.route = sshconfig.describe(hops)
        return remote

    def jump(
        self,
        host: str,
        port: int = 22,
        name: str | None = None,
        *,
        host_key_names: Sequence[str] = (),
        user: str | None = None,
        timeout: float = 10.0,
        accept_new_host_key: bool = False,
    ) -> SSHRemote:
        """A second SSH session to host:port carried over a direct-tcpip channel of this one.
        The host key must be known for `host` or any of `name` / `host_key_names` (e.g. the node
        name and its address). Same user, identity and known_hosts files as this connection."""
        names = [host, *([name] if name else []), *host_key_names]
        names = [hostkeys.host_key_name(n, port) for n in dict.fromkeys(names)]
        try:
            chan = self.open_tcp(host, port, timeout=timeout)
        except SSHError as exc:
            raise SSHError(f"cannot connect to {host} port {port} from {self.host}: {exc}") from exc
        login = replace(
            self._login,
            user=user or self.user,
            creds=self._login.creds.keys_only(),  # node hops: keys only, never a prompt
            timeout=timeout,
            accept_new_host_key=accept_new_host_key or self._login.accept_new_host_key,
        )
        try:
            transport = _handshake(chan, host, port, names, login)
        except SSHError:
            chan.close()
            raise
        hop = SSHRemote(transport, host=host, port=port, user=login.user, login=login, parent=self)
        self._children.append(hop)
        return hop

    # --- channels ------------------------------------------------------------------------
    def open_tcp(self, host: str, port: int, *, timeout: float = 10.0) -> paramiko.Channel:
        """A direct-tcpip channel from this host to host:port (what `ssh -L` uses)."""
        try:
            return self.transport.open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout
            )
        except paramiko.ChannelException as exc:
            raise SSHError(
                f"{self.host} could not open a connection to {host} port {port}: {exc.text}"
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SSHError(f"connection to {self.host} lost: {exc or type(exc).__name__}") from exc

    def open_unix(self, path: str, *, timeout: float = 10.0) -> paramiko.Channel:
        """A direct-streamlocal@openssh.com channel to the unix socket `path` on this host."""
        transport = self.transport
        if not isinstance(transport, _Transport):
            raise SSHError("open_unix needs a connection made by SSHRemote.connect")
        try:
            return transport.open_streamlocal(path, timeout=timeout)
        except paramiko.ChannelException as exc:
            raise SSHError(
                f"{self.host} could not open unix socket {path}: {exc.text}",
                hint="the server needs AllowStreamLocalForwarding yes and the socket must exist",
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SSHError(f"connection to {self.host} lost: {exc or type(exc).__name__}") from exc

    def is_alive(self) -> bool:
        return (
            self.transport.is_active()
            and (self._link is None or self._link.alive())
            and (self.parent is None or self.parent.is_alive())
        )

    # --- Remote protocol -------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        """Run argv (each word shell-quoted for the remote login shell). Never raises for a
        non-zero exit; SSHError if the connection fails, CommandError on timeout."""
        argv = list(argv)
        command = " ".join(shlex.quote(a) for a in argv)
        deadline = time.monotonic() + timeout
        try:
            chan = self.transport.open_session(timeout=timeout)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin.encode("utf-8"))  # scripts are small: fits the 2 MiB window
            chan.shutdown_write()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SSHError(f"cannot run `{command}` on {self.host}: {exc or type(exc).__name__}") from exc
        stderr_parts: list[bytes] = []

        def drain_stderr() -> None:
            while chunk := chan.recv_stderr(65536):
                stderr_parts.append(chunk)

        err_thread = threading.Thread(target=drain_stderr, daemon=True)
        err_thread.start()
        stdout_parts: list[bytes] = []
        try:
            while True:
                chan.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = chan.recv(65536)
                if not chunk:
                    break
                stdout_parts.append(chunk)
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError
        except TimeoutError:
            chan.close()
            raise CommandError(
                f"timed out after {timeout:g} s on {self.host}",
                argv=argv,
                exit_status=None,
                stderr=b"".join(stderr_parts).decode("utf-8", "replace"),
            ) from None
        err_thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        status = chan.exit_status
        chan.close()
        if status == -1 and not self.transport.is_active():
            raise SSHError(f"connection to {self.host} lost while running `{command}`")
        return CommandResult(
            argv=argv,
            exit_status=status,
            stdout=b"".join(stdout_parts).decode("utf-8", "replace"),
            stderr=b"".join(stderr_parts).decode("utf-8", "replace"),
        )

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is None:
                try:
                    client = paramiko.SFTPClient.from_transport(
                        self.transport, window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE
                    )
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    raise SSHError(f"cannot start SFTP on {self.host}: {exc}") from exc
                if client is None:
                    raise SSHError(f"cannot start SFTP on {self.host}")
                self._sftp = client
            return self._sftp

    def read_file(self, path: str) -> bytes:
        """The file's bytes; relative paths are relative to the home directory (SFTP's default
        directory). FileNotFoundError (plain) when missing, so callers can poll."""
        sftp = self._sftp_client()
        try:
            with sftp.open(path, "rb") as fh:
                fh.prefetch()
                return fh.read()
        except (paramiko.SSHException, EOFError) as exc:
            raise SSHError(f"cannot read {path} on {self.host}: {exc}") from exc

    def home(self) -> str:
        if self._home is None:
            try:
                self._home = self._sftp_client().normalize(".")
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise SSHError(f"cannot find the home directory on {self.host}: {exc}") from exc
        return self._home

    def close(self) -> None:
        for child in self._children:
            child.close()
        self._children.clear()
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        link, self._link = self._link, None
        if link is not None:
            link.release()
        elif not self._shared:
            self.transport.close()

    def __enter__(self) -> SSHRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
