"""The far end of a notebook tunnel, per tunnel mode: an `open_upstream` for hpcnb.tunnel.Tunnel.

    direct    laptop -> login (SSH) -> direct-tcpip to node:port
    node-ssh  laptop -> login (SSH) -> node's sshd (SSH in a channel) -> direct-tcpip 127.0.0.1:port
    socket    laptop -> login (SSH) -> node's sshd -> direct-streamlocal to the notebook's unix socket

The connection is kept (hpcnb.ssh.reconnect): a dropped one is re-made with backoff while the local
port stays open. The first connection rides on the command's own login: one SSH handshake per host
per command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from hpcnb.errors import HpcnbError
from hpcnb.ssh import feed
from hpcnb.ssh.opens import OpenDone
from hpcnb.ssh.reconnect import RETRYABLE, ReconnectingUpstream
from hpcnb.ssh.remote import SSHRemote
from hpcnb.ssh.transport import (
    STREAMLOCAL,
    STREAMLOCAL_HINT,
    TUNNEL_WINDOW_SIZE,
    SSHTransport,
    open_refused,
    reader_for,
)
from hpcnb.tunnel import Notify, Upstream

MODES = ("direct", "node-ssh", "socket")


@dataclass(frozen=True)
class Target:
    """Where the notebook listens, as its handshake says (hpcnb.handshake.Handshake)."""

    mode: str
    host: str | None  # direct: the node's address
    port: int | None
    socket: str | None  # socket mode: the unix socket's path on the node
    node: str | None  # the node's name (node-ssh, socket): what the login host resolves
    node_aliases: tuple[str, ...] = ()  # other names its host key may be known under


class NotebookRoute:
    """Opens one channel to the notebook per browser connection, over a kept SSH connection."""

    errors = RETRYABLE
    deliver = staticmethod(feed.deliver)  # the notebook's replies go to the browser from paramiko's thread
    read_by = staticmethod(reader_for)  # and the browser's requests are read there too, where it can

    def __init__(self, target: Target, login: SSHRemote, connect_login: Callable[[], SSHRemote], *,
                 accept_new_host_key: bool = False, notify: Notify | None = None,
                 close_logins: bool = True, at_node: bool = False) -> None:
        if target.mode not in MODES:
            raise HpcnbError(f"unknown tunnel mode {target.mode!r} (known: {', '.join(MODES)})")
        if target.mode != "direct" and not target.node:
            raise HpcnbError("neither the scheduler nor the job named the notebook's node")
        self.target = target
        self._own_login = login  # the command's: its owner closes it
        self._connect_login = connect_login
        self._accept_new = accept_new_host_key
        self._close_logins = close_logins  # False: the logins are a keeper's, shared (hpcnb.keeper)
        # True: `login` is the node hop already (its own process's: hpcnb.ssh.hopchild), and
        # connect_login makes it again
        self._at_node = at_node
        # The first connection is made here, not on the first browser request: an unknown node host
        # key or a refused login is then this command's error (exit 5 / 4), not a retried hop.
        first = login if target.mode == "direct" or at_node else self._hop(login)
        self._upstream: ReconnectingUpstream[SSHRemote] = ReconnectingUpstream(
            self._connect, self._open, notify=notify, connection=first)

    def _hop(self, login: SSHRemote) -> SSHRemote:
        # SSH to the node by the name the scheduler and the node itself use (resolved on the login
        # host, like `ssh node01` there); its host key may be known under either name.
        assert self.target.node is not None
        return login.jump(self.target.node, 22, host_key_names=self.target.node_aliases,
                          accept_new_host_key=self._accept_new)

    def _connect(self) -> SSHRemote:
        login = self._connect_login()  # after a drop: a new login connection, then the hop again
        if self.target.mode == "direct" or self._at_node:
            return login
        try:
            return self._hop(login)
        except BaseException:
            if self._close_logins:
                login.close()
            raise

    def _tcp_end(self) -> tuple[str, int]:
        """Where a direct-tcpip channel goes: the node's address, or (node-ssh) its loopback."""
        t = self.target
        return ("127.0.0.1" if t.mode == "node-ssh" else str(t.host)), int(t.port or 0)

    def _open(self, conn: SSHRemote) -> Upstream:
        t = self.target
        if t.mode == "socket":
            assert t.socket is not None
            return conn.open_unix(t.socket, window_size=TUNNEL_WINDOW_SIZE)
        return conn.open_tcp(*self._tcp_end(), window_size=TUNNEL_WINDOW_SIZE)

    def __call__(self) -> Upstream:
        return self._upstream()

    def open_soon(self, done: OpenDone) -> bool:
        """Open a channel as __call__ does, without a thread waiting for it (hpcnb.tunnel's
        OpenSoon): done(channel, None), done(None, SSHError) when the far end cannot be reached,
        done(None, None) when the connection was lost meanwhile, from paramiko's thread
        (SSHTransport.open_channel_soon). False when the connection is not known to be alive: then
        __call__ (which reconnects) is the way."""
        conn = self._upstream.connection
        transport = None if conn is None else conn.transport
        if conn is None or not isinstance(transport, SSHTransport) or not transport.is_active():
            return False
        t = self.target
        if t.mode == "socket":
            assert t.socket is not None
            kind, fields = STREAMLOCAL, (t.socket, "", 0)  # OpenSSH PROTOCOL 2.4 (SSHTransport)
            what, hint = f"unix socket {t.socket}", STREAMLOCAL_HINT
        else:
            host, port = self._tcp_end()
            kind, fields = "direct-tcpip", (host, port, "127.0.0.1", 0)
            what, hint = f"a connection to {host} port {port}", None

        def answered(chan: paramiko.Channel | None, error: BaseException | None) -> None:
            if chan is not None or not transport.is_active():
                done(chan, None)  # open, or lost: __call__ reconnects
            else:
                done(None, open_refused(conn.host, what, error, hint))

        return transport.open_channel_soon(kind, fields, answered, window_size=TUNNEL_WINDOW_SIZE)

    def login(self) -> SSHRemote | None:
        """The live login connection (to read the job's files over), None while reconnecting: the
        tunnel's own, so one reconnect serves both."""
        conn = self._upstream.connection
        if conn is None:
            return None
        login = conn.login()
        return login if login.is_alive() else None

    def close(self) -> None:
        """Close what this route opened itself: never the command's own login connection, nor a
        login at all when the logins are shared (close_logins=False)."""
        conn, self._upstream.connection = self._upstream.connection, None
        if conn is None or conn is self._own_login:
            return
        login = conn.login()
        with contextlib.suppress(*RETRYABLE):
            if login is not conn or self._close_logins:
                conn.close()
            if self._close_logins and login is not conn and login is not self._own_login:
                login.close()
