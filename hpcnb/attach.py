"""Attaching: a tunnel from 127.0.0.1 on this machine to a job's notebook, checked before its URL
is handed out, and held while the job is watched.

The local end is hpcnb.tunnel's, in this process, with the far end per tunnel mode from
hpcnb.ssh.openers (or, for the `local` backend, a plain TCP connection to the notebook on this
machine); with a keeper (hpcnb.keeper), the keeper serves both ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from hpcnb.errors import HpcnbError, KeeperError
from hpcnb.handshake import Handshake
from hpcnb.net import tcp_connect
from hpcnb.remote import Remote
from hpcnb.tunnel import Notify, Tunnel

ANSWER_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class OpenTunnel:
    """A tunnel that answers: the URL to open (it carries the token), and how to hold it."""

    url: str
    local_port: int
    hold: Callable[[threading.Event | None], None]
    """Serve until the given event is set (or Ctrl-C), or raise JobEnded when the notebook ends."""
    extra: dict[int, int] = field(default_factory=dict)
    """Other ports of the node (a Dask dashboard, TensorBoard): node port -> local port."""
    app: str = "jupyter"
    password: str | None = None
    """What the user types into the app's login page (code-server, RStudio); None: the URL has it."""


class Listening(Protocol):
    """A local end that serves 127.0.0.1:port until stopped: hpcnb.tunnel.Tunnel, or a tunnel a
    keeper serves (hpcnb.keeper.client.KeptForward)."""

    port: int

    def stop(self) -> object: ...


@dataclass(frozen=True)
class Far:
    """The far end of a tunnel: how to listen for it on 127.0.0.1 (a port, 0 for a free one), the
    connection to read the job's files over while attached (None while it reconnects), and what
    to close afterwards."""

    listen: Callable[[int, Notify], Listening]
    files_remote: Callable[[], Remote | None]
    close: Callable[[], None]


def _served_here(opener: Callable[[], Any]) -> Callable[[int, Notify], Listening]:
    """Listen in this process, each connection's far end from `opener`."""

    def listen(port: int, notify: Notify) -> Listening:
        local = Tunnel(opener, port=port, notify=notify)
        local.start()
        local.serve_in_thread()
        return local

    return listen


def local_far(handshake: Handshake, remote: Remote) -> Far:
    """The `local` backend: the notebook listens on this machine."""
    host, port = handshake.host or "127.0.0.1", int(handshake.port or 0)

    def opener() -> Any:
        sock = tcp_connect(host, port, timeout=10)
        sock.settimeout(None)
        return sock

    return Far(_served_here(opener), lambda: remote, lambda: None)


def port_handshake(handshake: Handshake, port: int) -> Handshake:
    """The handshake as if `port` of the node were the notebook's: the same route, another port
    (the socket mode's node hop then goes to the node's loopback, as node-ssh does)."""
    mode = "node-ssh" if handshake.tunnel == "socket" else handshake.tunnel
    return replace(handshake, port=port, tunnel=mode, socket=None)


def _target(handshake: Handshake, node: str | None) -> dict[str, Any]:
    """Where the notebook listens (hpcnb.ssh.Target's fields): the node the scheduler named wins,
    the handshake's own name for it is an alias its host key may be known under."""
    target_node = node or handshake.node
    aliases = tuple(n for n in (handshake.node,) if n and n != target_node)
    return {"mode": handshake.tunnel, "host": handshake.host, "port": handshake.port,
            "socket": handshake.socket, "node": target_node, "node_aliases": aliases}


def ssh_far(handshake: Handshake, login: Any, connect_login: Callable[[], Any], node: str | None, *,
            accept_new_host_key: bool, notify: Notify) -> Far:
    """A cluster: over SSH, per the handshake's tunnel mode (hpcnb.ssh.openers)."""
    from hpcnb.ssh import NotebookRoute, Target, hopprocess  # paramiko is slow to import

    target = Target(**_target(handshake, node))
    if hopprocess.wanted(target):  # node-ssh, socket: the node's SSH layer in a process of its own
        hop = hopprocess.NodeHopTunnel(target, login, connect_login,
                                       accept_new_host_key=accept_new_host_key, notify=notify)
        return Far(hop.listen, hop.login, hop.close)
    route = NotebookRoute(target, login, connect_login, accept_new_host_key=accept_new_host_key,
                          notify=notify)
    return Far(_served_here(route), route.login, route.close)


def forwarded_far(handshake: Handshake, remote: Any, node: str | None) -> Far:
    """A connection that forwards for us (a keeper, hpcnb.keeper; or ssh's ControlMaster,
    hpcnb.openssh): it listens on 127.0.0.1 itself, so the bytes are encrypted once, and a keeper
    keeps the port when it logs in again after a drop. When what serves the tunnel ends, the
    attach ends too (KeeperError): the port is gone with it."""
    served: list[Any] = []

    def listen(port: int, notify: Notify) -> Listening:
        served.append(remote.forward(_target(handshake, node), port, notify))
        return served[-1]

    def files_remote() -> Remote:
        if served and not served[-1].alive():
            who = "the keeper" if hasattr(remote, "endpoint") else "the ssh"  # hpcnb.keeper / openssh
            raise KeeperError(f"{who} serving 127.0.0.1:{served[-1].port} has ended",
                              hint=f"see hpcnb connections; `hpcnb attach {handshake.job_id}` "
                                   "tunnels again")
        return remote  # type: ignore[no-any-return]

    return Far(listen, files_remote, lambda: None)


def check_answers(local_port: int, handshake: Handshake, timeout: float | None = None) -> None:
    """GET the app's readiness path through the tunnel (Jupyter: /api/status with its token, 200;
    an app: below 400): the URL we print must already work."""
    import http.client  # here, not at the top: `hpcnb list` imports this module, and never needs it

    deadline = time.monotonic() + (ANSWER_TIMEOUT_S if timeout is None else timeout)
    last: Exception | None = None
    jupyter = handshake.app == "jupyter"
    headers = {"Authorization": f"token {handshake.token}"} if jupyter else {}
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", local_port, timeout=10)
        try:
            conn.request("GET", handshake.base_url.rstrip("/") + handshake.ready, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status == 200 or (not jupyter and response.status < 400):
                return
            last = HpcnbError(f"HTTP {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            last = exc
        finally:
            conn.close()
        time.sleep(0.2)
    raise HpcnbError(f"the notebook did not answer through the tunnel: {last}")


@contextlib.contextmanager
def tunnel(handshake: Handshake, far: Far, *, port: int | None, notify: Notify,
           watch: Callable[[threading.Event, Callable[[], Remote | None]], None]
           ) -> Iterator[OpenTunnel]:
    """Listen on 127.0.0.1 (port, or a free one), check that the notebook answers through it, and
    give its URL; everything is closed on leaving."""
    local: Listening | None = None
    try:
        local = far.listen(port or 0, notify)
        local_port = local.port
        check_answers(local_port, handshake)

        def hold(stop: threading.Event | None = None) -> None:
            watch(stop or threading.Event(), far.files_remote)

        yield OpenTunnel(handshake.url(local_port), local_port, hold, app=handshake.app,
                         password=handshake.password)
    finally:
        if local is not None:
            local.stop()
        far.close()
