"""Attaching: the tunnel from 127.0.0.1 on this machine to the job's notebook, held until told to stop.

The hops per tunnel mode (DESIGN.md, "Tunnel modes"):
    direct    laptop -> login (SSH) -> direct-tcpip to node:port
    node-ssh  laptop -> login (SSH) -> node's sshd (SSH in a channel) -> direct-tcpip 127.0.0.1:port
    socket    laptop -> login (SSH) -> node's sshd -> direct-streamlocal to the notebook's unix socket
    local     laptop -> 127.0.0.1:port (the `local` scheduler: no SSH at all)
A dropped SSH connection is re-made with backoff while the local port stays open.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hpcnb import session
from hpcnb.context import Context
from hpcnb.errors import HpcnbError, JobEnded
from hpcnb.handshake import Handshake
from hpcnb.schedulers import JobState
from hpcnb.store import Store

WATCH_INTERVAL = 5.0  # the `ended` file: a file read on the login host
STATUS_INTERVAL = 60.0  # the scheduler, for jobs killed too hard to write `ended`


@dataclass(frozen=True)
class Attached:
    url: str
    local_port: int


def upstream_for(ctx: Context, handshake: Handshake, node: str | None):
    """A Tunnel `open_upstream` for this job's notebook, reconnecting when SSH drops."""
    from hpcnb.tunnel import ReconnectingUpstream

    if ctx.is_local:
        return lambda: _tcp(handshake.host or "127.0.0.1", handshake.port)

    mode = handshake.tunnel
    if mode == "direct":
        def connect():
            return ctx.connect()

        def open_(conn):
            return conn.open_tcp(handshake.host, handshake.port)
    else:
        # SSH to the node by the name the scheduler and the node itself use (resolved on the login
        # host, like `ssh node01` there); its host key may be known under either name.
        target = node or handshake.node
        if not target:
            raise HpcnbError(f"job {handshake.job_id}: neither the scheduler nor the job named its node")
        aliases = tuple(n for n in (handshake.node,) if n and n != target)

        def hop(login):
            return login.jump(target, 22, host_key_names=aliases,
                              accept_new_host_key=ctx.accept_new_host_key)

        def connect():
            login = ctx.connect()  # after a drop: a new login connection, then the hop again
            try:
                return hop(login)
            except BaseException:
                login.close()
                raise

        if mode == "node-ssh":
            def open_(conn):
                return conn.open_tcp("127.0.0.1", handshake.port)
        else:
            def open_(conn):
                return conn.open_unix(handshake.socket)

    # The first connection is made here, not on the first browser request: an unknown node host
    # key or a refused login is then this command's error (exit 5 / 4), not a retried tunnel hop.
    # It rides on the command's own login connection: one SSH handshake per host per command.
    first = ctx.remote if mode == "direct" else hop(ctx.remote)
    return ReconnectingUpstream(connect, open_, notify=ctx.notify, connection=first)


def _tcp(host: str, port: int | None) -> socket.socket:
    sock = socket.create_connection((host, int(port or 0)), timeout=10)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def check_answers(local_port: int, handshake: Handshake, timeout: float = 20.0) -> None:
    """GET /api/status through the tunnel: the URL we print must already work."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", local_port, timeout=10)
        try:
            conn.request("GET", handshake.base_url.rstrip("/") + "/api/status",
                         headers={"Authorization": f"token {handshake.token}"})
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
            last = HpcnbError(f"HTTP {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            last = exc
        finally:
            conn.close()
        time.sleep(0.2)
    raise HpcnbError(f"the notebook did not answer through the tunnel: {last}")


def hold(ctx: Context, store: Store, job_id: str, handshake: Handshake, *, port: int | None,
         on_ready: Callable[[Attached], None], node: str | None = None,
         stop: threading.Event | None = None) -> str:
    """Build the tunnel, call on_ready with the URL, and serve until `stop` is set or the job ends.

    Returns "detached" (stop was set) or raises JobEnded when the job's notebook ends. Without
    `stop`, it serves until interrupted (Ctrl-C / SIGTERM arrive as KeyboardInterrupt).
    """
    from hpcnb.tunnel import Tunnel

    opener = upstream_for(ctx, handshake, node)
    tunnel = Tunnel(opener, port=port or 0, notify=ctx.notify)
    local_port = tunnel.start()
    tunnel.serve_in_thread()
    try:
        check_answers(local_port, handshake)
        store.set_local_port(ctx.cfg.name, job_id, local_port)
        on_ready(Attached(handshake.url(local_port), local_port))
        return _watch(ctx, store, job_id, handshake, opener, stop or threading.Event())
    finally:
        tunnel.stop()
        connection = getattr(opener, "connection", None)
        if connection is not None and not ctx.is_own(connection):
            connection.close()


def _watch(ctx: Context, store: Store, job_id: str, handshake: Handshake, opener,
           stop: threading.Event) -> str:
    warned = False
    next_status = time.monotonic() + STATUS_INTERVAL
    while not stop.wait(WATCH_INTERVAL):
        remote = _current_remote(ctx, opener)
        if remote is None:
            continue  # reconnecting; the tunnel says so
        try:
            ended = session.read_ended(ctx, job_id, remote)
            status = None
            if ended is not False or time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_INTERVAL
                status = ctx.statuses([job_id], remote).get(job_id)
                if status is not None:
                    session.record_status(store, ctx.cfg.name, status)
        except HpcnbError as exc:
            ctx.notify(f"could not check the job: {exc}")
            continue
        if ended is not False or (status is not None and status.state.is_final):
            if status is not None and status.state is JobState.UNKNOWN:
                status = None
            raise _ended(ctx, job_id, status)
        left = (handshake.walltime_end - time.time()) if handshake.walltime_end else None
        if left is not None and not warned and left <= ctx.cfg.walltime_warning:
            warned = True
            ctx.notify(f"job {job_id} reaches its time limit in {max(0, int(left // 60))} min; "
                       "save your work")
    return "detached"


def _current_remote(ctx: Context, opener):
    """The connection to read the job's files over: the tunnel's own, so a reconnect serves both."""
    connection = getattr(opener, "connection", None)
    if connection is None:
        return ctx.remote if ctx.is_local else None
    login = connection
    while getattr(login, "parent", None) is not None:
        login = login.parent
    return login if login.is_alive() else None


def _ended(ctx: Context, job_id: str, status) -> JobEnded:
    state = status.state.value if status is not None else "ended"
    return JobEnded(f"job {job_id} has ended ({state}); its notebook is gone",
                    hint=f"hpcnb logs {job_id} --cluster {ctx.cfg.name}")
