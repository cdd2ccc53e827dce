"""The tunnel of `node-ssh` and `socket` mode with its node hop in a process of its own (POSIX).

Here, in the process that holds the login (a keeper, or `hpcnb attach`), the node's port 22 is a
direct-tcpip channel on the login, carried to one end of a socket pair by the login's own thread
(hpcnb.ssh.feed, hpcnb.ssh.transport.reader_for: as a browser connection in `direct` mode). The
child (hpcnb.ssh.hopchild) logs in to the node over the other end and serves the listener bound
here, so the port never changes. Why two processes: hopchild's docstring.

When the child's session ends (the login dropped, the node's sshd went away), the next browser
connection waits in the listener's queue while a new channel is opened (on a new login if the old
one is dead, with ReconnectingUpstream's backoff and notices) and a new child started on the same
listener, which then serves it: as the in-process route (hpcnb.ssh.openers) reconnects on the next
connection, with no login (and no prompt) while no tab asks. When that fails, that connection is
closed, and the next one tries again.
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
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from hpcnb.errors import HpcnbError, SSHError, TunnelError
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
# The child's program. Its path: not the working folder (`-c` puts it first, where a folder's own
# hpcnb/ would win), and this hpcnb's folder first unless it is on the path already (a source
# checkout run from its root: the same code, however this process found it). No `invoke`, which
# paramiko imports only to run an ssh config's `Match exec` (the child reads no ssh config): 48 of
# its 180 ms start.
_ROOT = str(Path(__file__).resolve().parents[2])
_CHILD = ("import sys\n"
          "if sys.path and sys.path[0] == '': del sys.path[0]\n"
          f"if {_ROOT!r} not in sys.path: sys.path.insert(0, {_ROOT!r})\n"
          "sys.modules['invoke'] = None\n"
          "from hpcnb.ssh.hopchild import main\n"
          "main()\n")


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
    """One hopchild process, and the threads that read what it says (stdout) and what went wrong
    (stderr: its last lines, for the error when it does not start; at -vv, the log)."""

    def __init__(self, proc: subprocess.Popen[bytes], notify: Notify) -> None:
        self.proc, self._notify = proc, notify
        self.first: queue.Queue[dict[str, Any] | None] = queue.Queue()  # ready, error, or None (ended)
        self.ended = threading.Event()
        self._stderr: deque[str] = deque(maxlen=3)
        threading.Thread(target=self._read, name="node-hop-child", daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, name="node-hop-stderr", daemon=True)
        self._stderr_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        answered = False
        try:
            for line in self.proc.stdout:
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if not isinstance(message, dict):
                        continue
                    if "notice" in message:
                        self._notify(str(message["notice"]))
                    elif not answered:
                        answered = True
                        self.first.put(message)
        finally:
            self.first.put(None)
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(OSError, ValueError):
                    if pipe is not None:
                        pipe.close()
            self.ended.set()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    self._stderr.append(line)
                    _log.debug("node hop process %d: %s", self.proc.pid, line)

    def why(self) -> str:
        """What a child that did not start said last, and its exit status."""
        status = self.proc.poll()
        if status is not None:
            self._stderr_reader.join(1.0)  # its last lines, read to the end
        said = f": {self._stderr[-1]}" if self._stderr else ""
        return f" (exit status {status}{said})" if status is not None else said

    def answer(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.first.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        stdin = self.proc.stdin
        with contextlib.suppress(OSError, ValueError):
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
        if self._stopped.is_set():
            raise TunnelError("this tunnel was stopped")
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
        assert login is not None
        try:
            self._serve_over(chan, login)
        except BaseException:
            self._let_go(chan, login)
            raise

    def _serve_over(self, chan: Upstream, login: SSHRemote) -> None:
        """A child that logs in to the node over chan and serves the listener, ready."""
        node_login = login.node_login(accept_new_host_key=self._accept_new)
        t = self.target
        names = [hostkeys.host_key_name(n, self.sshd_port)
                 for n in dict.fromkeys([str(t.node), *t.node_aliases])]
        child, wire, listener = self._spawn(chan)
        spec = hopchild.spec_for(str(t.node), self.sshd_port, names, node_login, dataclasses.asdict(t),
                                 wire, listener)
        with contextlib.suppress(OSError, ValueError):  # ended, or stop() closed its stdin
            _write(child.proc.stdin, spec)
        answer = child.answer(START_S + node_login.timeout)
        if answer is None or "ready" not in answer:
            child.stop()
            if answer is not None and isinstance(answer.get("error"), dict):
                raise hopchild.error_from(answer["error"])
            raise SSHError(f"the node hop to {t.node} did not start{child.why()}",
                           hint=f"-vv shows its log; {ENV}=0 runs it in this process")

    def _spawn(self, chan: Upstream) -> tuple[_Child, int, int]:
        """The child, with one end of a socket pair whose other end carries chan, and the
        listener: under the lock, so that stop() either sees it or has closed the listener."""
        ours, theirs = socket.socketpair()
        try:
            for end in (ours, theirs):
                with contextlib.suppress(OSError):
                    end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PAIR_BUFFER)
            with self._lock:
                if self._stopped.is_set() or self._listener is None:
                    raise SSHError("the tunnel was stopped")
                wire, listener = theirs.fileno(), self._listener.fileno()  # the same in the child
                try:
                    # A session of its own: Ctrl-C and Ctrl-\ in the terminal are this process's to
                    # act on; the child ends when its stdin does (this process gone too).
                    proc = subprocess.Popen(
                        [sys.executable or "python3", "-c", _CHILD], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(wire, listener),
                        start_new_session=True)
                except (OSError, ValueError) as exc:
                    raise SSHError(f"cannot start the node hop's process ({sys.executable}): {exc}",
                                   hint=f"{ENV}=0 runs it in this process") from exc
                self._child = child = _Child(proc, self._say)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(True)
        self._pump.carry(ours, chan)
        return child, wire, listener

    def _let_go(self, chan: Upstream, login: SSHRemote) -> None:
        """A start that failed: its channel closed, and a login made for it once stop() came."""
        with contextlib.suppress(*RETRYABLE):
            chan.close()
        if self._stopped.is_set() and self._close_logins and login is not self._own_login:
            with contextlib.suppress(*RETRYABLE):
                login.close()

    def _supervise(self) -> None:
        """Once the child has ended, start another when a browser connects (as the in-process
        route reconnects on the next connection: no login, and no prompt, while no tab asks),
        until stop()."""
        while True:
            with self._lock:
                child = self._child
            if child is not None:
                child.ended.wait()
            if not self._browser_waits():
                return
            login = self._upstream.connection
            login_lost = login is None or not login.is_alive()
            if not login_lost:  # else ReconnectingUpstream says it, and the reconnect
                self.notify(f"connection to {self.target.node} lost, reconnecting")
            attempt = 0
            while True:
                attempt += 1
                try:
                    self._start_child()
                except (*RETRYABLE, HpcnbError) as exc:
                    if self._stopped.is_set():
                        return
                    self.notify(f"cannot open the tunnel's far end: {exc}")
                    self._refuse_one()
                    if not self._browser_waits():
                        return
                    continue
                if not login_lost:
                    self.notify(f"reconnected after {attempt} attempt{'s' if attempt > 1 else ''}")
                break

    def _browser_waits(self) -> bool:
        """Wait until a browser connection waits in the listener's queue (True), or stop() (False)."""
        with self._lock:
            listener = None if self._stopped.is_set() else self._listener
        if listener is None:
            return False
        poller = select.poll()  # not select(): a keeper may hold more than FD_SETSIZE descriptors
        try:
            poller.register(listener, select.POLLIN)
        except (OSError, ValueError):  # closed by stop()
            return False
        while not self._stopped.is_set():
            for _, event in poller.poll(500):
                return not (event & select.POLLNVAL) and not self._stopped.is_set()
        return False

    def _refuse_one(self) -> None:
        """Close the waiting browser connection whose far end could not be made: it asks again."""
        with self._lock:
            listener = None if self._stopped.is_set() else self._listener
            if listener is not None:
                with contextlib.suppress(OSError):
                    listener.accept()[0].close()

    def stop(self) -> None:
        """Stop listening, end the child and every connection."""
        with self._lock:
            self._stopped.set()
            child, self._child = self._child, None
            if self._listener is not None:
                self._listener.close()
        if child is not None:
            child.stop()
        self._pump.stop()

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
