"""SSHRemote: one authenticated paramiko Transport per host, host keys checked on every hop.

Built on paramiko.Transport directly (never SSHClient + AutoAddPolicy): the host key is checked
against known_hosts after key exchange and before any authentication is attempted.
"""

from __future__ import annotations

import getpass
import shlex
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN
from paramiko.message import Message

from hpcnb import hostkeys
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
KEEPALIVE_S = 30
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
    identity_file: str | None
    known: hostkeys.KnownHosts
    timeout: float
    accept_new_host_key: bool
    allow_agent: bool


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
        hostkeys.authenticate(transport, host, login.user, login.identity_file, login.allow_agent)
    except SSHError:  # includes HostKeyError
        transport.close()
        raise
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        detail = str(exc) or type(exc).__name__
        raise SSHError(f"SSH handshake with {host} port {port} failed: {detail}") from exc
    transport.set_keepalive(KEEPALIVE_S)
    return transport


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
    ) -> None:
        self.transport = transport
        self.host, self.port, self.user = host, port, user
        self.parent = parent
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
    ) -> SSHRemote:
        """Connect, check the host key, authenticate. known_hosts_files: checked in order, the
        first is where an accepted new key is added (default ~/.ssh/known_hosts + system file)."""
        login = _Login(
            user or getpass.getuser(),
            identity_file,
            hostkeys.KnownHosts(known_hosts_files),
            timeout,
            accept_new_host_key,
            allow_agent,
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
        cls, cfg: ClusterLike, *, timeout: float = 10.0, accept_new_host_key: bool = False
    ) -> SSHRemote:
        """Connect to a ClusterConfig's login host; its known_hosts file is checked first (and
        receives accepted keys), then ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts."""
        if not cfg.login_host:
            raise SSHError(f"cluster {getattr(cfg, 'name', '?')} has no login_host configured")
        files = [cfg.known_hosts] if cfg.known_hosts else []
        files += [f for f in hostkeys.default_known_hosts_files() if f not in files]
        return cls.connect(
            cfg.login_host,
            cfg.port,
            cfg.user,
            cfg.identity_file,
            files,
            timeout=timeout,
            accept_new_host_key=accept_new_host_key,
        )

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
            timeout=timeout,
            accept_new_host_key=accept_new_host_key,
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
        return self.transport.is_active() and (self.parent is None or self.parent.is_alive())

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
        self.transport.close()

    def __enter__(self) -> SSHRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
