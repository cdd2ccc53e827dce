"""The tunnel of `node-ssh` and `socket` mode with its node hop in a process of its own (POSIX).

Here, in the process that holds the login (a keeper, or `hpcnb attach`), the node's port 22 is a
direct-tcpip channel on the login, carried to one end of a socket pair by the login's own thread
(hpcnb.ssh.feed, hpcnb.ssh.transport.reader_for: as a browser connection in `direct` mode). The
child (hpcnb.ssh.hopchild) logs in to the node over the other end and serves the listener bound
here, so the port never changes. Why two processes: hopchild's docstring.

When the child's session ends (the login dropped, the node's sshd went away), a new channel is
opened (on a new login if the old one is dead, with ReconnectingUpstream's backoff and notices) and
a new child started on the same listener: browsers wait in its queue meanwhile. When that fails,
each browser connection that comes is told by a close, and tries again, as the in-process route
does (hpcnb.ssh.openers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from hpcnb.errors import HpcnbError, SSHError
from hpcnb.ssh import feed, hopchild, hostkeys
from hpcnb.ssh.openers import MODES, NotebookRoute, Target
from hpcnb.ssh.reconnect import RETRYABLE, ReconnectingUpstream
from hpcnb.ssh.remote import SSHRemote
from hpcnb.ssh.transport import reader_for
from hpcnb.tunnel import Notify, Tunnel, Upstream, listen_on

ENV = "HPCNB_NODE_HOP_PROCESS"  # "0": the node hop in this process, as on Windows
START_S = 30.0  # for the child's interpreter and imports, on top of the node's login timeout
STOP_S = 2.0
PAIR_BUFFER = 1 << 20
_log = logging.getLogger(__name__)
# The child's program: this hpcnb in place of the working folder on its path (the same code,
# however this process found it; never a folder's own hpcnb/), and without `invoke`, which
# paramiko imports only to run an ssh config's `Match exec` (the child reads no ssh config):
# 48 of its 180 ms start.
_CHILD = (f"import sys; sys.path[0] = {str(Path(__file__).resolve().parents[2])!r}; "
          "sys.modules['invoke'] = None; from hpcnb.ssh.hopchild import main; main()")


def wanted(target: Target) -> bool:
    """Whether this target's tunnel runs its node hop in a process of its own."""
    return (target.mode != "direct" and os.name == "posix" and not getattr(sys, "frozen", False)
            and os.environ.get(ENV, "1") != "0")


def notebook_tunnel(target: Target, login: SSHRemote, connect_login: Callable[[], SSHRemote], *,
                    port: int = 0, notify: Notify | None = None, accept_new_host_key: bool = False,
                    close_logins: bool = True
                    ) -> tuple[Tunnel | NodeHopTunnel, NotebookRoute | NodeHopTunnel]:
    """A notebook's tunnel, to start() and serve_in_thread(), and its route (login(), close()):
    one object with the node hop in a process of its own where wanted(), else in this process."""
    if wanted(target):
        hop = NodeHopTunnel(target, login, connect_login, port=port, notify=notify,
                            accept_new_host_key=accept_new_host_key, close_logins=close_logins)
        return hop, hop
    route = NotebookRoute(target, login, connect_login, accept_new_host_key=accept_new_host_key,
                          notify=notify, close_logins=close_logins)
    return Tunnel(route, port=port, notify=notify), route


def _ignore(_message: str) -> None:
    return None


class _NodeSshd:
    """The opener of the node's port 22 (for the pump Tunnel): its channels are carried by the
    login's own thread both ways."""

    errors = RETRYABLE
    read_by = staticmethod(reader_for)

    @staticmethod
    def deliver(upstream: object, sock: socket.socket, done: feed.Done, spawn: feed.Spawn) -> bool:
        # Never paced as a long download is (feed.PACE_AFTER): this one channel carries every
        # browser connection's packets, and after its first 8 MiB each would wait 1 ms in a worker.
        return feed.deliver(upstream, sock, done, spawn, paced=False)

    def __init__(self, upstream: ReconnectingUpstream[SSHRemote]) -> None:
        self._upstream = upstream

    def __call__(self) -> Upstream:
        return self._upstream()


class _Child:
    """One hopchild process and the thread that reads what it says."""

    def __init__(self, proc: subprocess.Popen[bytes], notify: Notify) -> None:
        self.proc, self._notify = proc, notify
        self.first: queue.Queue[dict[str, Any] | None] = queue.Queue()  # ready, error, or None (ended)
        self.ended = threading.Event()
        threading.Thread(target=self._read, name="node-hop-child", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        answered = False
        try:
            for line in self.proc.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "notice" in message:
                    self._notify(str(message["notice"]))
                elif not answered:
                    answered = True
                    self.first.put(message)
        finally:
            self.first.put(None)
            self.proc.wait()
            self.ended.set()

    def answer(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.first.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        stdin = self.proc.stdin
        with contextlib.suppress(OSError):
            if stdin is not None:
                stdin.close()  # the child ends when its stdin does
        try:
            self.proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class NodeHopTunnel:
    """hpcnb.tunnel.Tunnel's part (start, serve_in_thread, stop) and NotebookRoute's (login, close)
    for a node hop in its own process."""

    def __init__(self, target: Target, login: SSHRemote, connect_login: Callable[[], SSHRemote], *,
                 port: int = 0, notify: Notify | None = None, accept_new_host_key: bool = False,
                 close_logins: bool = True, sshd_port: int = 22) -> None:
        if target.mode not in MODES or target.mode == "direct" or not target.node:
            raise HpcnbError(f"a node hop needs the node's name and mode node-ssh or socket, not {target}")
        self.target, self.port = target, port
        self.sshd_port = sshd_port  # the node's sshd (22 on every cluster; another in tests)
        self.notify = notify or _ignore
        self._own_login, self._close_logins = login, close_logins
        self._accept_new = accept_new_host_key
        self._upstream: ReconnectingUpstream[SSHRemote] = ReconnectingUpstream(
            connect_login, self._open_sshd, notify=self._say, connection=login)
        self._pump = Tunnel(_NodeSshd(self._upstream), notify=self._say)  # never listens
        self._listener: socket.socket | None = None
        self._child: _Child | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def _say(self, message: str) -> None:
        self.notify(message)

    def _open_sshd(self, login: SSHRemote) -> Upstream:
        return login.open_tcp(str(self.target.node), self.sshd_port, timeout=login.node_login().timeout)

    def start(self) -> int:
        """Bind the port and start the node hop: its errors (the node's host key, a refused
        login) are the caller's, as the in-process route's first hop's are."""
        if self._listener is None:
            self._listener = listen_on("127.0.0.1", self.port)
            self.port = self._listener.getsockname()[1]
            try:
                self._start_child()
            except BaseException:
                self.stop()
                raise
        return self.port

    def listen(self, port: int, notify: Notify) -> NodeHopTunnel:
        """Serve on 127.0.0.1:port (0: a free one), saying what happens to notify: the shape of
        hpcnb.attach.Far's `listen`."""
        self.port, self.notify = port, notify
        self.serve_in_thread()
        return self

    def serve_in_thread(self) -> threading.Thread:
        self.start()
        thread = threading.Thread(target=self._supervise, name="node-hop", daemon=True)
        thread.start()
        return thread

    def _start_child(self) -> None:
        chan = self._upstream()  # the node's port 22, on a new login when the old one is dead
        login = self._upstream.connection
        assert login is not None and self._listener is not None
        node_login = login.node_login(accept_new_host_key=self._accept_new)
        t = self.target
        names = [hostkeys.host_key_name(n, self.sshd_port)
                 for n in dict.fromkeys([str(t.node), *t.node_aliases])]
        ours, theirs = socket.socketpair()
        for end in (ours, theirs):
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PAIR_BUFFER)
        wire, listener = theirs.fileno(), self._listener.fileno()  # the same numbers in the child
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=None if _log.isEnabledFor(logging.DEBUG) else subprocess.DEVNULL,
                pass_fds=(wire, listener))
        except OSError as exc:
            ours.close()
            chan.close()
            raise SSHError(f"cannot start the node hop's process ({sys.executable}): {exc}",
                           hint=f"{ENV}=0 runs it in this process") from exc
        finally:
            theirs.close()
        child = _Child(proc, self._say)
        with self._lock:
            stopped, self._child = self._stopped.is_set(), child
        ours.setblocking(True)
        self._pump.carry(ours, chan)
        spec = hopchild.spec_for(str(t.node), self.sshd_port, names, node_login, dataclasses.asdict(t),
                                 wire, listener)
        with contextlib.suppress(OSError):
            _write(proc.stdin, spec)
        answer = None if stopped else child.answer(START_S + node_login.timeout)
        if answer is None or "ready" not in answer:
            child.stop()
            if answer is not None and isinstance(answer.get("error"), dict):
                raise hopchild.error_from(answer["error"])
            said = "" if answer is None else f": {answer}"
            raise SSHError(f"the node hop to {t.node} did not start{said}")

    def _supervise(self) -> None:
        """Start the child again whenever it ends, until stop()."""
        while True:
            with self._lock:
                child = self._child
            if child is not None:
                child.ended.wait()
            if self._stopped.is_set():
                return
            login = self._upstream.connection
            login_lost = login is None or not login.is_alive()
            if not login_lost:  # else ReconnectingUpstream says it, and the reconnect
                self.notify(f"connection to {self.target.node} lost, reconnecting")
            attempt = 0
            while not self._stopped.is_set():
                attempt += 1
                try:
                    self._start_child()
                except (*RETRYABLE, HpcnbError) as exc:
                    if self._stopped.is_set():
                        return
                    self.notify(f"cannot open the tunnel's far end: {exc}")
                    self._refuse_one()
                    continue
                if not login_lost:
                    self.notify(f"reconnected after {attempt} attempt{'s' if attempt > 1 else ''}")
                break

    def _refuse_one(self) -> None:
        """Wait for a browser connection (or stop()) and close it: it asks again, and so do we."""
        listener = self._listener
        if listener is None:
            return
        poller = select.poll()  # not select(): a keeper may hold more than FD_SETSIZE descriptors
        try:
            poller.register(listener, select.POLLIN)
        except (OSError, ValueError):  # closed by stop()
            return
        while not self._stopped.is_set():
            if poller.poll(500):
                with contextlib.suppress(OSError):
                    listener.accept()[0].close()
                return

    def stop(self) -> None:
        """Stop listening, end the child and every connection."""
        self._stopped.set()
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            child.stop()
        self._pump.stop()
        if self._listener is not None:
            self._listener.close()

    def login(self) -> SSHRemote | None:
        """The live login connection (to read the job's files over), None while reconnecting."""
        conn = self._upstream.connection
        return conn if conn is not None and conn.is_alive() else None

    def close(self) -> None:
        """Close the login this tunnel made itself (after a drop), never the command's own one nor
        a keeper's (close_logins=False)."""
        conn, self._upstream.connection = self._upstream.connection, None
        if conn is not None and conn is not self._own_login and self._close_logins:
            with contextlib.suppress(*RETRYABLE):
                conn.close()


def _write(stream: IO[bytes] | None, text: str) -> None:
    if stream is not None:
        stream.write(text.encode())
        stream.flush()
