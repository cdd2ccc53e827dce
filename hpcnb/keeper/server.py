"""The keeper process: one authenticated login connection, served to this user's hpcnb commands.

Requests (one per client connection, hpcnb.keeper.wire): `hello` (what it holds), `run` (a command
on the login host), `read` (a file), `forward` (a tunnel: the keeper listens on 127.0.0.1 and
forwards into SSH itself, like `ssh -O forward`, so the bytes are encrypted once on the laptop and
the port outlives a reconnect), `stream` (raw bytes to a host:port, for `hpcnb proxy`), `command`
(a command with the caller's terminal, for `hpcnb ssh` through the scheduler; `resize` and
`exited` name it by the caller's id), `logout`.

It logs in on the first request that needs it, with the prompts answered by that command
(hpcnb.keeper.lines). A dropped connection is made again on the next use, once, with backoff
while the network is away; a refused login or an unknown host key ends the keeper (it keeps no
answer to try again with). It exits after `idle_s` with no command connected and no tunnel, on
logout, or when its login cannot be made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing import connection as mpc
from multiprocessing.connection import Client, Listener
from typing import Any

from hpcnb.errors import AuthenticationFailed, HostKeyError, HpcnbError, KeeperError, SSHError
from hpcnb.keeper import wire
from hpcnb.keeper.commands import run_kept, waits_until
from hpcnb.keeper.endpoint import Endpoint
from hpcnb.keeper.lines import ClientLine, LineClosed, PromptRelay
from hpcnb.pump import splice
from hpcnb.ssh import SSHRemote, Target, hopprocess
from hpcnb.ssh.reconnect import RETRYABLE

_log = logging.getLogger("hpcnb.keeper")
HELLO_TIMEOUT_S = 10.0
RELOGIN_WINDOW_S = 120.0  # after a drop: how long the network may stay away before giving up


@dataclass(frozen=True)
class Spec:
    """What a keeper is started with (JSON on its stdin): the cluster's login values."""

    key: str
    cluster: str
    login_host: str
    port: int | None
    user: str | None
    identity_file: str | None
    known_hosts: str | None
    accept_new_host_key: bool
    idle_s: float
    notify: bool = True  # the desktop notification when a login is wanted again

    @property
    def name(self) -> str:  # SSHRemote.from_config's ClusterLike
        return self.cluster


class _OpenUntilStatus:
    """A channel for splice that its close() leaves open: the caller closes it after the status."""

    def __init__(self, chan: Any) -> None:
        self.recv, self.sendall, self.shutdown = chan.recv, chan.sendall, chan.shutdown

    def close(self) -> None:
        pass


class Keeper:
    WAKE_WAIT_S = 5.0  # after stop(), the accept loop ends within this, or it cannot be woken

    def __init__(self, spec: Spec, endpoint: Endpoint, authkey: bytes) -> None:
        self.spec, self.endpoint, self._authkey = spec, endpoint, authkey
        self.relay = PromptRelay(spec.cluster, notify=spec.notify)
        self.since = time.time()
        self.logins = 0
        self._remote: SSHRemote | None = None
        self._login_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._active = 0
        self._last_used = time.monotonic()
        self._tunnels: dict[int, dict[str, Any]] = {}
        self._channels: dict[str, Any] = {}  # `command` requests running, by the caller's id
        self._exits: dict[str, int] = {}  # and their exit statuses, until `exited` takes them
        self._exited = threading.Condition(self._state_lock)
        self._stop = threading.Event()
        self._served = threading.Event()  # the accept loop has ended
        self.on_unwakeable: Callable[[], None] = lambda: None
        self._ending = ""  # set when the keeper must end after the current requests are answered
        self.exit_reason = ""

    # --- the login connection --------------------------------------------------------------
    def login(self, asker: ClientLine | None) -> SSHRemote:
        """The live login connection; made (again) when there is none."""
        with self._login_lock:
            if self._stop.is_set() or self._ending:
                raise KeeperError(f"the keeper for {self.spec.cluster} is ending "
                                  f"({self.exit_reason or self._ending})")
            remote = self._remote
            if remote is not None and remote.is_alive():
                return remote
            again = remote is not None
            self._remote = None
            if remote is not None:
                _log.info("the login connection dropped; logging in again")
                with contextlib.suppress(HpcnbError, OSError, EOFError):
                    remote.close()
            try:
                self._remote = self._connect(asker, again=again)
            except HpcnbError as exc:
                # Ends once this request has had its answer (serve_connection): stopping now would
                # end the process before the command hears why (a host key, a refused code).
                self._ending = f"cannot log in: {exc}"
                raise
            self.logins += 1
            _log.info("logged in (%d) over %s%s", self.logins, self._remote.route,
                      f" at {self._remote.reached}" if self._remote.reached else "")
            return self._remote

    def _connect(self, asker: ClientLine | None, *, again: bool) -> SSHRemote:
        delay, started = 0.5, time.monotonic()
        while True:
            handler = self.relay.handler(asker, again=again)
            try:
                return SSHRemote.from_config(self.spec, accept_new_host_key=self.spec.accept_new_host_key,
                                             prompt_handler=handler)
            except (HostKeyError, AuthenticationFailed):
                raise  # the same answer again, and under MFA another prompt: never retried
            except SSHError as exc:
                if not again or time.monotonic() - started + delay > RELOGIN_WINDOW_S:
                    raise
                _log.info("login attempt failed (%s); again in %g s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    # --- requests ---------------------------------------------------------------------------
    def serve_connection(self, conn: Any) -> None:
        with self._state_lock:
            self._active += 1
        op = None
        try:
            # The HMAC challenge both ways (what Listener.accept does with an authkey), here in the
            # connection's own thread: a client that never answers holds up only itself.
            watchdog = threading.Timer(HELLO_TIMEOUT_S, _hang_up, args=(conn,))
            watchdog.start()  # a client that never completes the challenge holds nothing for long
            try:
                mpc.deliver_challenge(conn, self._authkey)
                mpc.answer_challenge(conn, self._authkey)
            finally:
                watchdog.cancel()
            request = wire.recv(conn, timeout=HELLO_TIMEOUT_S)
            op = request.get("op")
            line = ClientLine(conn, can_prompt=bool(request.get("can_prompt")))
            self._dispatch(line, request)
        except (LineClosed, EOFError, OSError, AuthenticationError):
            pass  # the command went away, or was not one of this user's
        except KeeperError as exc:
            _log.info("request refused: %s", exc)
        finally:
            with self._state_lock:
                self._active -= 1
                if op != "hello":  # `hpcnb connections` looking is not using: it keeps nothing alive
                    self._last_used = time.monotonic()
            with contextlib.suppress(OSError):
                conn.close()
            if self._ending:
                self.stop(self._ending)

    def _dispatch(self, line: ClientLine, request: dict[str, Any]) -> None:
        if request.get("key") != self.spec.key:
            # Never serve a route other than its own, whatever the socket's name says.
            line.send(wire.error_message(KeeperError("this keeper holds another route")))
            return
        ops: dict[str, Callable[[ClientLine, dict[str, Any]], None]] = {
            "hello": self._hello, "login": self._login_op, "run": self._run, "read": self._read,
            "forward": self._forward, "stream": self._stream, "command": self._command,
            "resize": self._resize, "exited": self._exit_status, "logout": self._logout}
        op = ops.get(str(request.get("op")))
        if op is None:
            line.send(wire.error_message(KeeperError(f"unknown request {request.get('op')!r}")))
            return
        try:
            op(line, request)
        except LineClosed:
            raise
        except (HpcnbError, OSError) as exc:  # OSError: a file on the cluster (SFTP's EACCES ...)
            line.send(wire.error_message(exc))
        except Exception as exc:  # noqa: BLE001 (a bug reaches the command as one line; the keeper lives)
            _log.exception("request %s failed", request.get("op"))
            line.send(wire.error_message(exc))

    def _hello(self, line: ClientLine, _request: dict[str, Any]) -> None:
        line.send(self.describe())

    def _login_op(self, line: ClientLine, _request: dict[str, Any]) -> None:
        remote = self.login(line)
        line.send({"route": getattr(remote, "route", ""), "user": getattr(remote, "user", "")})

    def describe(self) -> dict[str, Any]:
        remote = self._remote
        with self._state_lock:
            idle = 0.0 if self._active > 1 or self._tunnels else time.monotonic() - self._last_used
            tunnels = list(self._tunnels.values())
        return {"pid": os.getpid(), "cluster": self.spec.cluster, "key": self.spec.key,
                "route": remote.route if remote is not None else self.spec.login_host,
                "reached": remote.reached if remote is not None else None,
                "logged_in": remote is not None and remote.is_alive(), "logins": self.logins,
                "since": self.since, "idle_s": round(idle, 1), "persist_s": self.spec.idle_s,
                "tunnels": tunnels}

    def _run(self, line: ClientLine, request: dict[str, Any]) -> None:
        argv, stdin = [str(a) for a in request.get("argv", [])], request.get("stdin")
        timeout = float(request.get("timeout", 60.0))
        result = run_kept(lambda: self.login(line), argv, stdin=stdin, timeout=timeout,
                          deadline=waits_until(timeout))
        line.send({"result": {"exit_status": result.exit_status, "stdout": result.stdout,
                              "stderr": result.stderr}})

    def _read(self, line: ClientLine, request: dict[str, Any]) -> None:
        path = str(request.get("path", ""))
        try:
            data = self.login(line).read_file(path)
        except SSHError:
            data = self.login(line).read_file(path)  # a read is safe to try again on a new login
        line.send({"data": wire.encode_bytes(data)})

    def _forward(self, line: ClientLine, request: dict[str, Any]) -> None:
        raw = dict(request.get("target") or {})
        raw["node_aliases"] = tuple(raw.get("node_aliases") or ())
        target = Target(**raw)
        def tell(message: str) -> None:  # the attach says it too ("reconnecting", "reconnected")
            _log.info("%s", message)
            with contextlib.suppress(LineClosed):
                line.send({"notice": message})

        tunnel, route = hopprocess.notebook_tunnel(
            target, self.login(line), lambda: self.login(None), port=int(request.get("port") or 0),
            notify=tell, accept_new_host_key=bool(request.get("accept_new_host_key")), close_logins=False)
        port = None
        try:
            port = tunnel.start()
            tunnel.serve_in_thread()
            with self._state_lock:
                self._tunnels[port] = {"port": port, "mode": target.mode,
                                       "node": target.node or target.host, "since": time.time()}
            line.reader = True
            self.relay.hold(line)
            line.send({"port": port})
            while not self._stop.is_set():  # until the command closes its line (or ends)
                message = wire.recv(line.conn)
                if message.get("close"):
                    break  # the command stops this tunnel (KeptForward.stop)
                if "answer" in message or "error" in message:
                    line.put_answer(message)
        except (EOFError, OSError):
            pass
        finally:
            self.relay.release(line)
            tunnel.stop()
            route.close()
            if port is not None:  # a port that was taken is another tunnel's, not this one's
                with self._state_lock:
                    self._tunnels.pop(port, None)

    def _stream(self, line: ClientLine, request: dict[str, Any]) -> None:
        """A TCP connection from the login host to host:port (a node's sshd, for `hpcnb proxy`):
        after the answer, the command's line carries raw bytes both ways until either side ends."""
        chan = self.login(line).open_tcp(str(request.get("host")), int(request.get("port") or 0))
        line.send({"ok": True})
        raw = socket.socket(fileno=os.dup(line.conn.fileno()))  # the same socket, unframed
        splice(raw, chan, RETRYABLE)

    def _command(self, line: ClientLine, request: dict[str, Any]) -> None:
        """A command on the login host on a session channel, with a pty of the caller's size when
        it asks for one; after the answer, raw bytes both ways until the command ends."""
        ident, pty, command = str(request.get("id") or ""), request.get("pty"), str(request.get("command"))
        status = -1
        try:
            with self.login(line).session(command, timeout=30) as chan:
                if isinstance(pty, dict):
                    chan.get_pty(term=str(pty.get("term") or "xterm"), width=int(pty.get("cols") or 80),
                                 height=int(pty.get("rows") or 24))
                chan.exec_command(command)
                with self._state_lock:
                    self._channels[ident] = chan
                line.send({"ok": True})
                # The channel stays open after the bytes: sshd may send the exit status after its EOF.
                splice(socket.socket(fileno=os.dup(line.conn.fileno())), _OpenUntilStatus(chan), RETRYABLE)
                if chan.status_event.wait(10):
                    status = chan.exit_status
        finally:
            with self._state_lock:
                self._channels.pop(ident, None)
                self._exits[ident] = status
                self._exited.notify_all()

    def _resize(self, line: ClientLine, request: dict[str, Any]) -> None:
        with self._state_lock:
            chan = self._channels.get(str(request.get("id")))
        if chan is not None:
            chan.resize_pty(width=int(request.get("cols") or 80), height=int(request.get("rows") or 24))
        line.send({"ok": True})

    def _exit_status(self, line: ClientLine, request: dict[str, Any]) -> None:
        ident = str(request.get("id"))
        with self._state_lock:
            self._exited.wait_for(lambda: ident in self._exits, timeout=20)
            status = self._exits.pop(ident, None)
        if status is None:
            raise KeeperError("the keeper has no exit status for that command")
        line.send({"ok": True, "status": status})

    def _logout(self, line: ClientLine, _request: dict[str, Any]) -> None:
        line.send({"ok": True})
        self.stop("logged out")

    # --- lifetime ---------------------------------------------------------------------------
    @property
    def ending(self) -> bool:
        return self._stop.is_set()

    def stop(self, reason: str) -> None:
        if self._stop.is_set():
            return
        self.exit_reason = reason
        self._stop.set()
        _log.info("ending: %s", reason)
        # Wake the accept loop: it cannot be interrupted otherwise.
        with contextlib.suppress(OSError, EOFError, AuthenticationError):
            Client(self.endpoint.address, family=self.endpoint.family, authkey=self._authkey).close()
        if not self._served.wait(self.WAKE_WAIT_S):
            # Nothing reached it: its socket is gone (the folder deleted by a /tmp cleaner or by
            # hand) or is another keeper's now. End the login, then the process (__main__).
            _log.info("the accept loop cannot be woken (its socket is gone); ending the process")
            self._close()
            self.on_unwakeable()

    def _watch_idle(self) -> None:
        interval = max(0.2, min(30.0, self.spec.idle_s / 4))
        while not self._stop.wait(interval):
            with self._state_lock:
                busy = self._active > 0 or bool(self._tunnels)
                idle = time.monotonic() - self._last_used
            if not busy and idle >= self.spec.idle_s:
                self.stop(f"idle for {idle:.0f} s")

    def serve_forever(self, listener: Listener) -> None:
        threading.Thread(target=self._watch_idle, name="keeper-idle", daemon=True).start()
        while not self._stop.is_set():
            try:
                conn = listener.accept()  # no authkey here: serve_connection checks it
            except OSError as exc:  # EMFILE and the like: this connection, not the listener
                if self._stop.is_set():
                    break
                _log.info("cannot accept a connection: %s", exc)
                time.sleep(0.05)
                continue
            if self._stop.is_set():
                conn.close()
                break
            threading.Thread(target=self.serve_connection, args=(conn,), name="keeper-client",
                             daemon=True).start()
        self._served.set()
        self._close()

    def _close(self) -> None:
        remote, self._remote = self._remote, None
        if remote is not None:
            with contextlib.suppress(HpcnbError, OSError, EOFError):
                remote.close()


def _hang_up(conn: Any) -> None:
    """Wake whatever thread reads this connection (closing the fd alone would not, on Linux)."""
    with contextlib.suppress(OSError, ValueError):
        socket.socket(fileno=os.dup(conn.fileno())).shutdown(socket.SHUT_RDWR)


def listen(endpoint: Endpoint) -> Listener:
    """The keeper's listener. No authkey on it: each connection's own thread checks the key
    (Keeper.serve_connection), so one silent client cannot stall the others."""
    return Listener(endpoint.address, family=endpoint.family, backlog=64)
