"""A node hop in a process of its own: its SSH session to the node, and the tunnel's listener.

In `node-ssh` and `socket` mode every byte is sealed twice: for the node's sshd, then for the login
host's. In one Python process both layers share one interpreter lock, so a page's 100 connections
wait for each other's packets; `ssh -J` runs the two in two processes. So does hpcnb (on POSIX):
the process that holds the login (a keeper, or `hpcnb attach`) carries the node's port 22 over a
socket pair (hpcnb.ssh.hopprocess), and this process, its child, logs in to the node over the other
end, checks its host key, and serves the tunnel's listener, which the parent bound and hands over.
Loopback sshd, 100-connection load, median of 30 rounds: wall 129 -> 102 ms, CPU of both processes
70 ms against 79 in one.

The parent writes one JSON line on stdin (spec_for: where to, how to log in, the notebook's far
end, the two descriptors); this process answers on stdout, a JSON line each: {"ready": true} once
serving, {"error": {"type", "message", "hint"}} when the hop cannot be made (then it exits), and
{"notice": text} for what the tunnel says. It ends when its node session ends (exit 3) or when
stdin closes (its parent is gone or done: exit 0). It runs in a session of its own: Ctrl-C in the
terminal is the parent's to act on. What it writes on stderr the parent logs (-vv).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from hpcnb import errors
from hpcnb.ssh import auth, hostkeys
from hpcnb.ssh.transport import Login

LOST = 3  # exit status: the node session ended under the tunnel
_ERRORS = {cls.__name__: cls for cls in (errors.HostKeyError, errors.AuthenticationFailed,
                                         errors.SSHError, errors.TunnelError, errors.HpcnbError)}


def spec_for(host: str, port: int, names: Sequence[str], login: Login, target: dict[str, Any],
             wire: int, listener: int) -> str:
    """The line a parent writes: the node's sshd (host and the names its key may be known under),
    how to log in there, the notebook's far end (hpcnb.ssh.Target's fields) and the two descriptors."""
    creds = login.creds
    return json.dumps({
        "host": host, "port": port, "names": list(names), "target": target,
        "wire": wire, "listener": listener,
        "login": {
            "user": login.user, "identity_files": list(creds.identity_files),
            "identities_only": creds.identities_only, "allow_agent": creds.allow_agent,
            "passphrases": creds.passphrases(), "known_hosts": list(login.known.paths),
            "timeout": login.timeout, "accept_new_host_key": login.accept_new_host_key,
            "keepalive": login.keepalive, "keepalive_count": login.keepalive_count,
        },
    }) + "\n"


def _login(raw: dict[str, Any]) -> Login:
    creds = auth.Credentials(tuple(raw["identity_files"]), bool(raw["identities_only"]),
                             bool(raw["allow_agent"]), None, dict(raw["passphrases"]))
    return Login(str(raw["user"]), creds, hostkeys.KnownHosts(raw["known_hosts"]), float(raw["timeout"]),
                 bool(raw["accept_new_host_key"]), int(raw["keepalive"]), int(raw["keepalive_count"]))


def error_from(raw: dict[str, Any]) -> errors.HpcnbError:
    """The error a child said, as the class it was (a HostKeyError keeps its exit code)."""
    cls = _ERRORS.get(str(raw.get("type")), errors.SSHError)
    return cls(str(raw.get("message") or "the node hop failed"), hint=raw.get("hint"))


class _Say:
    """JSON lines to the parent; one writer at a time (the tunnel's notices come from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, **message: Any) -> None:
        with self._lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    def notice(self, text: str) -> None:
        self(notice=text)


def _end(code: int) -> NoReturn:
    sys.stdout.flush()
    os._exit(code)  # the tunnel's worker threads hold nothing that must outlive the session


def serve(spec: dict[str, Any], say: _Say) -> int:
    """Log in to the node over the wire, serve the listener until the session or stdin ends."""
    from hpcnb.ssh.openers import NotebookRoute, Target
    from hpcnb.ssh.remote import SSHRemote
    from hpcnb.ssh.transport import open_transport
    from hpcnb.tunnel import Tunnel

    login, host, port = _login(spec["login"]), str(spec["host"]), int(spec["port"])
    wire = socket.socket(fileno=int(spec["wire"]))
    listener = socket.socket(fileno=int(spec["listener"]))
    try:
        transport = open_transport(wire, host, port, list(spec["names"]), login)
    except errors.HpcnbError as exc:
        say(error={"type": type(exc).__name__, "message": exc.message, "hint": exc.hint})
        return 1
    node = SSHRemote(transport, host=host, port=port, user=login.user, login=login)

    def lost() -> SSHRemote:  # never made again here: the parent does, with a new login if need be
        raise errors.SSHError(f"the connection to {host} has ended")

    def notice(text: str) -> None:  # once the session has ended, the parent says what happens
        if transport.is_active():
            say.notice(text)

    raw = dict(spec["target"])
    raw["node_aliases"] = tuple(raw.get("node_aliases") or ())
    route = NotebookRoute(Target(**raw), node, lost, notify=notice, at_node=True)
    tunnel = Tunnel(route, notify=notice, listener=listener)
    tunnel.serve_in_thread()
    say(ready=True)
    transport.join()  # paramiko's thread: until the node's session ends
    tunnel.stop()
    return LOST


def _stdin_closed() -> None:
    sys.stdin.read()  # nothing more comes after the spec; EOF: the parent is gone or done
    _end(0)


def main() -> NoReturn:
    say = _Say()
    line = sys.stdin.readline()
    try:
        spec = json.loads(line)
    except ValueError:
        say(error={"type": "HpcnbError", "message": "the node hop was started without its spec"})
        _end(2)
    threading.Thread(target=_stdin_closed, name="parent", daemon=True).start()
    try:
        code = serve(spec, say)
    except Exception as exc:  # noqa: BLE001 - a bug: the parent says it in one line, no traceback
        traceback.print_exc()  # the parent logs it (-vv), and says its last line if this never started
        say(error={"type": "HpcnbError", "message": f"the node hop failed: {type(exc).__name__}: {exc}"})
        code = 1
    _end(code)


if __name__ == "__main__":
    main()
