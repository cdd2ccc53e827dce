"""A command's side of the kept connection: KeptRemote, and starting a keeper when none runs.

KeptRemote is the Remote protocol (hpcnb.remote) answered by the keeper for this route: each
request is its own connection to the keeper's endpoint, and a login prompt on the way (the first
login, or the one after a drop) is answered here, on this command's terminal or HPCNB_ASKPASS.
No paramiko is imported on this side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

from hpcnb.errors import AuthenticationFailed, KeeperError
from hpcnb.keeper import endpoint as ep
from hpcnb.keeper import wire
from hpcnb.prompts import ASKPASS_ENV, Prompt, askpass_or_terminal
from hpcnb.remote import CommandResult, logged

START_TIMEOUT_S = 15.0
LOGIN_ALLOWANCE_S = 90.0  # on top of a request's own timeout: a login (and its prompts) first
# No keeper there: no socket, a stale one, or one shutting down (reset while it closes its listener).
CONNECT_ERRORS = (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, EOFError)


def route_parts(cfg: Any) -> dict[str, object]:
    """Everything that decides where and as whom a login goes (see endpoint.route_key)."""
    ssh_config = Path(os.environ.get("HPCNB_SSH_CONFIG") or "~/.ssh/config").expanduser()
    try:
        # hpcnb's own `Include hpcnb.conf` (hpcnb code) adds only hpcnb-* hosts: not a new route.
        text = b"".join(line for line in ssh_config.read_bytes().splitlines(keepends=True)
                        if not line.lstrip().startswith(b"Include hpcnb.conf"))
        # A config that is nothing but that line (hpcnb code made the file) is no config at all:
        # the same route, so the same keeper (a new one would mean a new login, an MFA code).
        config_hash = hashlib.sha256(text).hexdigest() if text.strip() else ""
    except OSError:
        config_hash = ""
    from hpcnb.paths import state_dir

    return {"login_host": cfg.login_host, "port": cfg.port, "user": cfg.user or getpass.getuser(),
            "identity_file": cfg.identity_file, "known_hosts": cfg.known_hosts,
            "ssh_config": str(ssh_config), "ssh_config_sha256": config_hash,
            "home": str(Path.home()), "state": str(state_dir())}


def can_prompt() -> bool:
    """Whether this command can answer a login prompt (askpass, or a terminal)."""
    if os.environ.get(ASKPASS_ENV):
        return True
    try:
        with open("/dev/tty", "r+b"):
            return True
    except OSError:
        return sys.stdin is not None and sys.stdin.isatty()


class KeptRemote:
    """The Remote protocol through this route's keeper (started when there is none)."""

    def __init__(self, cfg: Any, *, accept_new_host_key: bool = False) -> None:
        self.cfg = cfg
        self.key = ep.route_key(route_parts(cfg))
        self.folder = ep.private_folder(ep.runtime_folder())
        self.endpoint = ep.endpoint_for(self.key, self.folder)
        self._authkey = ep.authkey(self.folder)
        self.accept_new_host_key = accept_new_host_key
        self.host = cfg.login_host
        self.user = cfg.user or ""
        self.route = f"{cfg.login_host} (kept connection)"

    def __repr__(self) -> str:
        return f"KeptRemote({self.cfg.name}, {self.endpoint.address})"

    # --- the Remote protocol ------------------------------------------------------------------
    @logged
    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        args = [str(a) for a in argv]
        reply = self.request({"op": "run", "argv": args, "stdin": stdin, "timeout": timeout},
                             timeout=timeout + LOGIN_ALLOWANCE_S)
        result = reply.get("result") or {}
        return CommandResult(args, int(result.get("exit_status", -1)), str(result.get("stdout", "")),
                             str(result.get("stderr", "")))

    def read_file(self, path: str) -> bytes:
        reply = self.request({"op": "read", "path": path}, timeout=LOGIN_ALLOWANCE_S)
        return wire.decode_bytes(str(reply.get("data", "")))

    def close(self) -> None:
        return None  # the keeper stays; each request closed its own connection

    def __enter__(self) -> KeptRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests ---------------------------------------------------------------------------
    def request(self, message: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        conn = self.connect()
        try:
            wire.send(conn, {**message, "key": self.key, "can_prompt": can_prompt()})
            reply = self._replies(conn, timeout)
        except (EOFError, OSError) as exc:
            raise KeeperError(f"the keeper for {self.cfg.name} went away: {str(exc) or type(exc).__name__}",
                              hint=f"see {self.endpoint.log}") from exc
        finally:
            conn.close()
        wire.raise_error(reply)  # the request's own error (a missing file, a refused login ...)
        return reply

    def _replies(self, conn: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = wire.recv(conn, timeout=max(0.1, deadline - time.monotonic()))
            if "prompt" in message:
                answer_prompt(conn, message)
                deadline = time.monotonic() + timeout  # the user's typing is not the keeper's time
                continue
            return message

    def check_login(self) -> None:
        """Make sure the keeper is logged in (doctor's SSH check): its login's errors, as such."""
        reply = self.request({"op": "login"}, timeout=LOGIN_ALLOWANCE_S)
        self.user = str(reply.get("user") or "")
        self.route = f"{reply.get('route')} (kept connection)"

    def describe(self) -> str:
        """For `hpcnb doctor`: which backend and how it is kept."""
        return f"paramiko, kept by a keeper for {self.cfg.persist:.0f} s idle ({self.endpoint.address})"

    def hello(self) -> dict[str, Any]:
        return self.request({"op": "hello"}, timeout=10.0)

    def forward(self, target: dict[str, Any], port: int,
                notify: Callable[[str], None] | None = None) -> KeptForward:
        """The keeper listens on 127.0.0.1:port (0: a free one) and forwards to `target` until the
        returned KeptForward is stopped (or this process ends)."""
        conn = self.connect()
        try:
            wire.send(conn, {"op": "forward", "key": self.key, "can_prompt": can_prompt(),
                             "target": target, "port": port,
                             "accept_new_host_key": self.accept_new_host_key})
            reply = self._replies(conn, LOGIN_ALLOWANCE_S)
        except (EOFError, OSError) as exc:
            conn.close()
            raise KeeperError(f"the keeper for {self.cfg.name} went away: {str(exc) or type(exc).__name__}",
                              hint=f"see {self.endpoint.log}") from exc
        except BaseException:
            conn.close()
            raise
        if "error" in reply:
            conn.close()
            wire.raise_error(reply)
        return KeptForward(conn, int(reply["port"]), notify)

    def open_stream(self, host: str, port: int) -> socket.socket:
        """A raw byte stream to host:port as seen from the login host, carried by the keeper."""
        return self._raw({"op": "stream", "host": host, "port": port})

    def run_terminal(self, command: str, pty: Any) -> int:
        """COMMAND (one shell line) on the login host joined to this terminal (hpcnb.terminal);
        its exit status. The keeper holds the channel; window sizes and the status go by its id."""
        from hpcnb import terminal

        ident = secrets.token_hex(8)
        raw = self._raw({"op": "command", "command": command, "id": ident,
                         "pty": None if pty is None else dataclasses.asdict(pty)})
        try:
            terminal.join(raw, pty, lambda cols, rows: self.request(
                {"op": "resize", "id": ident, "cols": cols, "rows": rows}, timeout=10.0))
        finally:
            raw.close()
        return int(self.request({"op": "exited", "id": ident}, timeout=30.0)["status"])

    def _raw(self, message: dict[str, Any]) -> socket.socket:
        """Send a request whose answer turns the line into raw bytes both ways: that socket."""
        if self.endpoint.family != "AF_UNIX":
            raise KeeperError("a stream through the keeper needs a unix socket (not on Windows)",
                              hint='set persist = "no" for this cluster')
        conn = self.connect()
        try:
            wire.send(conn, {**message, "key": self.key, "can_prompt": can_prompt()})
            reply = self._replies(conn, LOGIN_ALLOWANCE_S)
            wire.raise_error(reply)
            return socket.socket(fileno=os.dup(conn.fileno()))  # the same socket, unframed now
        except (EOFError, ConnectionError) as exc:
            raise KeeperError(f"the keeper for {self.cfg.name} went away: {str(exc) or type(exc).__name__}",
                              hint=f"see {self.endpoint.log}") from exc
        finally:
            conn.close()

    # --- finding or starting the keeper -------------------------------------------------------
    def connect(self) -> Any:
        try:
            return self._client()
        except CONNECT_ERRORS:
            pass
        with ep.file_lock(self.endpoint.lock):
            try:
                return self._client()  # another command started it while this one waited
            except CONNECT_ERRORS:
                return self._start()

    def _client(self) -> Any:
        try:
            return Client(self.endpoint.address, family=self.endpoint.family, authkey=self._authkey)
        except AuthenticationError as exc:
            raise KeeperError(f"the keeper at {self.endpoint.address} refused this command's key",
                              hint=f"hpcnb logout --cluster {self.cfg.name}") from exc
        except PermissionError as exc:
            raise KeeperError(f"no access to {self.endpoint.address}: {exc.strerror}") from exc

    def _start(self) -> Any:
        spec = {"key": self.key, "cluster": self.cfg.name, "login_host": self.cfg.login_host,
                "port": self.cfg.port, "user": self.cfg.user, "identity_file": self.cfg.identity_file,
                "known_hosts": self.cfg.known_hosts, "accept_new_host_key": self.accept_new_host_key,
                "idle_s": self.cfg.persist, "notify": bool(getattr(self.cfg, "notify", True))}
        proc = spawn(self.endpoint, {"spec": spec, "folder": str(self.folder)})
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                return self._client()
            except CONNECT_ERRORS:
                pass
            if proc.poll() is not None:
                raise KeeperError(f"the keeper for {self.cfg.name} exited {proc.returncode}: "
                                  f"{_last_line(self.endpoint.log)}", hint=f"see {self.endpoint.log}")
            if time.monotonic() > deadline:
                raise KeeperError(f"the keeper for {self.cfg.name} did not start in "
                                  f"{START_TIMEOUT_S:g} s", hint=f"see {self.endpoint.log}")
            time.sleep(0.02)


class KeptForward:
    """A tunnel the keeper serves on 127.0.0.1:port while this line to it stays open."""

    def __init__(self, conn: Any, port: int, notify: Callable[[str], None] | None = None) -> None:
        self._conn, self.port = conn, port
        self._notify = notify or (lambda _message: None)  # the keeper's word on the tunnel
        self.ended = threading.Event()  # the keeper closed the line (it ended)
        self._send_lock = threading.Lock()
        threading.Thread(target=self._serve, name="kept-forward", daemon=True).start()

    def _serve(self) -> None:
        try:
            while True:
                message = wire.recv(self._conn)
                if "prompt" in message:  # the keeper logs in again after a drop: ask here
                    with self._send_lock:
                        answer_prompt(self._conn, message)
                elif "notice" in message:
                    self._notify(str(message["notice"]))
        except (EOFError, OSError, KeeperError):
            pass
        finally:
            self.ended.set()

    def alive(self) -> bool:
        return not self.ended.is_set()

    def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError), self._send_lock:
            wire.send(self._conn, {"close": True})  # the keeper closes the tunnel, then its end
        if not self.ended.wait(5.0):
            with contextlib.suppress(OSError, ValueError):  # wake our reader if it did not
                socket.socket(fileno=os.dup(self._conn.fileno())).shutdown(socket.SHUT_RDWR)
            self.ended.wait(1.0)
        with contextlib.suppress(OSError):
            self._conn.close()


def answer_prompt(conn: Any, message: dict[str, Any]) -> None:
    """Answer a keeper's login prompt here (terminal or HPCNB_ASKPASS), or say why not."""
    try:
        prompt = Prompt(**message["prompt"])
        wire.send(conn, {"answer": askpass_or_terminal(prompt)})
    except AuthenticationFailed as exc:
        wire.send(conn, wire.error_message(exc))
    except (TypeError, KeyError) as exc:
        wire.send(conn, wire.error_message(KeeperError(f"unreadable prompt: {exc}")))


def spawn(endpoint: ep.Endpoint, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """`python -m hpcnb.keeper`, detached from this terminal (it survives the terminal closing)."""
    try:
        log = open(endpoint.log, "ab")  # noqa: SIM115 (the child owns it; closed here after start)
        endpoint.log.chmod(0o600)
    except OSError as exc:
        raise KeeperError(f"cannot write the keeper's log {endpoint.log}: {exc.strerror or exc}",
                          hint='free some space, or set persist = "no" for this cluster') from exc
    detach: dict[str, Any] = {"start_new_session": True}
    if sys.platform == "win32":  # pragma: no cover
        detach = {"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP}
    with log:
        # cwd: home, so a keeper kept for hours holds no mount the command was started in busy;
        # and the very hpcnb this command runs (a source tree may not be the installed one).
        import hpcnb

        here = str(Path(hpcnb.__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen([sys.executable, "-m", "hpcnb.keeper"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=log, close_fds=True,
                                cwd=str(Path.home()), env={**os.environ, "PYTHONPATH": path},
                                **detach)
    assert proc.stdin is not None
    with contextlib.suppress(OSError):
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
    return proc


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1].strip()
    return "(no log)"


def _ask(endpoint: ep.Endpoint, key: bytes, op: str) -> dict[str, Any] | None:
    """One request to a keeper by its endpoint; None when no keeper answers there."""
    try:
        conn = Client(endpoint.address, family=endpoint.family, authkey=key)
    except (*CONNECT_ERRORS, AuthenticationError, EOFError):
        return None
    try:
        wire.send(conn, {"op": op, "key": endpoint.key, "can_prompt": False})
        reply = wire.recv(conn, timeout=5.0)
    except (EOFError, OSError, KeeperError):
        return None
    finally:
        conn.close()
    return None if "error" in reply else reply


def live_keepers() -> list[dict[str, Any]]:
    """This user's keepers that answer, as each describes itself; stale files are removed."""
    folder = ep.runtime_folder()
    if not folder.is_dir():
        return []
    folder = ep.private_folder(folder)
    key = ep.authkey(folder)
    found = []
    for info in sorted(folder.glob("*.json")):
        endpoint = ep.endpoint_for(info.stem, folder)
        described = _ask(endpoint, key, "hello")
        if described is None:
            forget(endpoint)
            continue
        found.append(described)
    return found


def logout(keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """End the keepers with these route keys (all when None); the ones that were running."""
    ended = []
    for described in live_keepers():
        if keys is not None and described.get("key") not in keys:
            continue
        folder = ep.runtime_folder()
        if _ask(ep.endpoint_for(str(described["key"]), folder), ep.authkey(folder), "logout"):
            ended.append(described)
    return ended


def forget(endpoint: ep.Endpoint) -> None:
    """Remove a dead keeper's files (its socket, its info), under its start lock."""
    with ep.file_lock(endpoint.lock):
        if _ask(endpoint, ep.authkey(endpoint.folder), "hello") is not None:
            return  # it came back (a new one started meanwhile)
        for path in (endpoint.info, Path(endpoint.address) if endpoint.family == "AF_UNIX" else None):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()


def route_key_of(cfg: Any) -> str:
    return ep.route_key(route_parts(cfg))
