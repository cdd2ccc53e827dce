"""SSHRemote: the Remote protocol (hpcnb.remote) over SSH, plus channels for the tunnel.

The hops under it (host keys checked on every hop, authentication) are hpcnb.ssh.transport's;
from_config follows ~/.ssh/config (hpcnb.ssh.route) and shares live links (hpcnb.ssh.links), so
a command that needs the login host twice (a node-ssh tunnel) logs in, and prompts, once.
"""

from __future__ import annotations

import contextlib
import getpass
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Protocol

import paramiko

from hpcnb.errors import CommandError, CommandNotStarted, ConnectionLost, SSHError
from hpcnb.remote import CommandResult, logged, shell_command
from hpcnb.ssh import auth, hostkeys, route
from hpcnb.ssh.links import Link, open_route
from hpcnb.ssh.sessions import SessionSlots
from hpcnb.ssh.transport import (
    MAX_PACKET_SIZE,
    STREAMLOCAL_HINT,
    WINDOW_SIZE,
    Login,
    SSHTransport,
    open_refused,
    open_tcp,
    open_transport,
)

# paramiko errors that mean the connection (not our request) failed.
CONNECTION_ERRORS = (paramiko.SSHException, EOFError, OSError)
# sshd answers a channel open at once, busy or not (or refuses it at once). Unanswered this long,
# the login node is taken for gone: sooner than ServerAliveInterval x ServerAliveCountMax (90 s by
# default), and behind a ProxyJump, where the dead node's socket is not ours to time out.
CHANNEL_OPEN_TIMEOUT_S = 20.0
# The longest a command waits for a session another of ours holds (MaxSessions; hpcnb.ssh.sessions)
# before its own timeout starts. A keeper's caller waits the timeout plus LOGIN_ALLOWANCE_S (90 s).
SESSION_WAIT_S = 30.0


class ClusterLike(Protocol):
    """What from_config needs of a ClusterConfig (hpcnb.config), by duck typing."""

    @property
    def login_host(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def user(self) -> str | None: ...
    @property
    def identity_file(self) -> str | None: ...
    @property
    def known_hosts(self) -> str | None: ...


class SSHRemote:
    """The Remote protocol (hpcnb.remote) over SSH, plus channels for the tunnel."""

    def __init__(
        self,
        transport: paramiko.Transport,
        *,
        host: str,
        port: int,
        user: str,
        login: Login,
        parent: SSHRemote | None = None,
        link: Link | None = None,
    ) -> None:
        self.transport = transport
        self.host, self.port, self.user = host, port, user
        self.parent = parent  # the login host a node hop (jump) goes through
        self._link = link  # a login's link is released (shared links stay up for others)
        self.route = f"{user}@{host}:{port}"
        self.reached: str | None = None  # the address that answered (one of a name's login nodes)
        self._children: list[SSHRemote] = []
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._login = login
        self._sessions = SessionSlots()  # the commands' session channels (MaxSessions)

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
        hop = route.direct_hop(host, port, user or getpass.getuser(),
                               (identity_file,) if identity_file else (), known_hosts_files or (),
                               accept_new_host_key, allow_agent)
        link, login = open_route([hop], timeout, prompt_handler, share=False)
        return cls(link.transport, host=host, port=port, user=login.user, login=login, link=link)

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
        port = cfg.port  # None: the ssh config's Port, else 22; an explicit value always wins
        defaults = route.Defaults(user=cfg.user, port=port, identity_file=cfg.identity_file,
                                  known_hosts=cfg.known_hosts, accept_new=accept_new_host_key)
        hops = route.route(cfg.login_host, defaults)
        link, login = open_route(hops, timeout, prompt_handler)
        last = hops[-1]
        remote = cls(link.transport, host=last.hostname, port=last.port, user=last.user, login=login,
                     link=link)
        remote.route = route.describe(hops)
        # Which of the login host's addresses answered; not known behind a ProxyJump (the first
        # hop's address would be the jump host's).
        remote.reached = link.first_peer() if len(hops) == 1 else None
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
        login = self.node_login(user=user, timeout=timeout, accept_new_host_key=accept_new_host_key)
        try:
            transport = open_transport(chan, host, port, names, login)
        except SSHError:
            chan.close()
            raise
        hop = SSHRemote(transport, host=host, port=port, user=login.user, login=login, parent=self)
        self._children.append(hop)
        return hop

    def node_login(self, *, user: str | None = None, timeout: float = 10.0,
                   accept_new_host_key: bool = False) -> Login:
        """How a node hop through this connection logs in: the same user, keys and known_hosts
        files, keys only (never a prompt)."""
        return replace(
            self._login,
            user=user or self.user,
            creds=self._login.creds.keys_only(),
            timeout=timeout,
            accept_new_host_key=accept_new_host_key or self._login.accept_new_host_key,
        )

    # --- channels ------------------------------------------------------------------------
    def open_tcp(self, host: str, port: int, *, timeout: float = 10.0,
                 window_size: int | None = None) -> paramiko.Channel:
        """A direct-tcpip channel from this host to host:port (what `ssh -L` uses)."""
        return open_tcp(self.transport, self.host, host, port, timeout=timeout, window_size=window_size)

    def open_unix(self, path: str, *, timeout: float = 10.0,
                  window_size: int | None = None) -> paramiko.Channel:
        """A direct-streamlocal@openssh.com channel to the unix socket `path` on this host."""
        transport = self.transport
        if not isinstance(transport, SSHTransport):
            raise SSHError("open_unix needs a connection made by SSHRemote.connect")
        try:
            return transport.open_streamlocal(path, timeout=timeout, window_size=window_size)
        except paramiko.ChannelException as exc:
            raise open_refused(self.host, f"unix socket {path}", exc, STREAMLOCAL_HINT) from exc
        except CONNECTION_ERRORS as exc:
            raise SSHError(f"connection to {self.host} lost: {exc or type(exc).__name__}") from exc

    @property
    def keepalive(self) -> int:
        """Seconds between keepalives (ServerAliveInterval; 0: none)."""
        return self._login.keepalive

    def login(self) -> SSHRemote:
        """The login connection this one is a hop of (itself for a login connection)."""
        return self if self.parent is None else self.parent.login()

    def is_alive(self) -> bool:
        return (
            self.transport.is_active()
            and (self._link is None or self._link.alive())
            and (self.parent is None or self.parent.is_alive())
        )

    # --- Remote protocol -------------------------------------------------------------------
    @logged
    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        """Run argv (each word shell-quoted for the remote login shell). Never raises for a
        non-zero exit; SSHError if the connection fails (CommandNotStarted before the command
        could start, ConnectionLost after: it may have run), CommandError on timeout. `timeout`
        counts from the command's start: waiting for a session (hpcnb.ssh.sessions) comes first,
        up to SESSION_WAIT_S, so a slow start never makes a command that ran look timed out."""
        argv = list(argv)
        command = shell_command(argv)
        chan = self._start_command(command, stdin, timeout)
        try:
            return self._answer(chan, argv, command, time.monotonic() + timeout, timeout)
        finally:
            self._close_session(chan)  # closed already, unless something unforeseen ended _answer

    def _answer(self, chan: paramiko.Channel, argv: list[str], command: str, deadline: float,
                timeout: float) -> CommandResult:
        """A started command's output and exit status (its channel closed after)."""
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
            why = self.transport.saved_exception  # what ended paramiko's thread, if anything did
            raise ConnectionLost(f"connection to {self.host} lost while running `{command}`"
                                 + (f" ({type(why).__name__}: {why})" if why is not None else ""))
        return CommandResult(
            argv=argv,
            exit_status=status,
            stdout=b"".join(stdout_parts).decode("utf-8", "replace"),
            stderr=b"".join(stderr_parts).decode("utf-8", "replace"),
        )

    @contextlib.contextmanager
    def session(self, command: str, timeout: float = 30.0) -> Iterator[paramiko.Channel]:
        """A session channel for `command` (an interactive one: a shell, `tail -f`), counted among
        this login's sessions (hpcnb.ssh.sessions) until it is closed here; CommandNotStarted if
        none is to be had."""
        chan = self._open_session(command, timeout, lasting=True)
        try:
            yield chan
        finally:
            self._close_session(chan, lasting=True)

    def _open_session(self, command: str, timeout: float, *, lasting: bool = False,
                      **window: int) -> paramiko.Channel:
        """A session channel, counted (hpcnb.ssh.sessions; `lasting`: one that may stay open for
        hours) until _close_session closes it."""
        deadline = time.monotonic() + min(timeout, SESSION_WAIT_S)
        while True:
            ended = self._sessions.opening()
            try:
                chan = self.transport.open_session(timeout=min(timeout, CHANNEL_OPEN_TIMEOUT_S), **window)
                break
            except paramiko.ChannelException as exc:  # refused: MaxSessions, or none allowed
                if self._sessions.refused(ended, deadline):
                    continue  # one of our commands has freed a session (hpcnb.ssh.sessions)
                raise CommandNotStarted(f"cannot run `{command}` on {self.host}: the server refused "
                                        f"a session channel ({exc.text})") from exc
            except CONNECTION_ERRORS as exc:
                self._sessions.closed()
                if self.transport.is_active():
                    # Unanswered: the login node is gone though no RST said so yet. Closed, so
                    # the next use logs in again.
                    self.transport.close()
                raise CommandNotStarted(
                    f"cannot run `{command}` on {self.host}: {exc or type(exc).__name__}") from exc
        if lasting:
            self._sessions.lasting()
        return chan

    def _close_session(self, chan: paramiko.Channel, lasting: bool = False) -> None:
        with contextlib.suppress(*CONNECTION_ERRORS):
            chan.close()
        self._sessions.closed(lasting=lasting)

    def _start_command(self, command: str, stdin: str | None, timeout: float) -> paramiko.Channel:
        """A session channel running `command`, its stdin written and closed."""
        chan = self._open_session(command, timeout)
        try:
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin.encode("utf-8"))  # scripts are small: fits the 2 MiB window
            chan.shutdown_write()
        except BaseException as exc:
            # The exec request may have reached sshd: may have run. If it ran and ended before
            # reading all of its stdin (sshd sent its exit status and closed the channel), its
            # output and exit status are the answer. paramiko also sets status_event on any
            # close, a refused exec's included: only a received exit status counts.
            if (isinstance(exc, CONNECTION_ERRORS) and chan.closed and chan.exit_status != -1
                    and self.transport.is_active()):
                return chan
            self._close_session(chan)
            if not isinstance(exc, CONNECTION_ERRORS):
                raise
            why = exc or type(exc).__name__
            raise ConnectionLost(f"cannot run `{command}` on {self.host}: {why}") from exc
        return chan

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is None:
                # paramiko's SFTPClient.from_transport, on a session that waits like a command's.
                try:
                    chan = self._open_session("the SFTP subsystem", CHANNEL_OPEN_TIMEOUT_S, lasting=True,
                                              window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
                except CommandNotStarted as exc:
                    raise SSHError(f"cannot start SFTP on {self.host}: {exc}") from exc
                try:
                    chan.invoke_subsystem("sftp")
                    self._sftp = paramiko.SFTPClient(chan)
                except CONNECTION_ERRORS as exc:
                    self._close_session(chan, lasting=True)
                    raise SSHError(f"cannot start SFTP on {self.host}: {exc}") from exc
            return self._sftp

    def read_file(self, path: str) -> bytes:
        """The file's bytes; relative paths are relative to the home directory (SFTP's default
        directory). FileNotFoundError (plain) when missing, so callers can poll."""
        sftp = self._sftp_client()
        try:
            # One read at a time on the shared SFTP session: paramiko's prefetch keeps per-file
            # state that concurrent readers (a keeper serving many commands) can leave waiting.
            with self._read_lock, sftp.open(path, "rb") as fh:
                fh.prefetch()
                return fh.read()
        except (paramiko.SSHException, EOFError) as exc:
            raise SSHError(f"cannot read {path} on {self.host}: {exc}") from exc

    def close(self) -> None:
        for child in self._children:
            child.close()
        self._children.clear()
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
            self._sessions.closed(lasting=True)
        link, self._link = self._link, None
        if link is not None:
            link.release()
        elif self.parent is not None:
            self.transport.close()  # a node hop's own transport

    def __enter__(self) -> SSHRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
