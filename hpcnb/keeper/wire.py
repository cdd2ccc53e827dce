"""The messages between hpcnb commands and a keeper: one JSON object per message.

multiprocessing.connection frames the messages and authenticates both ends (endpoint.py); JSON,
never pickle, is what crosses: a message can only ever be data. File contents travel as base64.
Errors cross as their class name, message and hint, and are raised again on the client as the
same HpcnbError subclass, so a refused code is still exit 4 and a lost connection still exit 4.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Protocol

from hpcnb import errors
from hpcnb.errors import HpcnbError, KeeperError

MAX_MESSAGE = 512 * 1024 * 1024  # a job log read whole, base64: generous, but bounded


class Conn(Protocol):
    """multiprocessing.connection.Connection, as used here."""

    def send_bytes(self, buf: bytes) -> None: ...
    def recv_bytes(self, maxlength: int | None = None) -> bytes: ...
    def poll(self, timeout: float | None = 0.0) -> bool: ...
    def close(self) -> None: ...


def send(conn: Conn, message: dict[str, Any]) -> None:
    conn.send_bytes(json.dumps(message).encode())


def recv(conn: Conn, timeout: float | None = None) -> dict[str, Any]:
    """The next message; KeeperError when none comes within `timeout` or it is not an object.
    EOFError/OSError (the other end went away) propagate."""
    if timeout is not None and not conn.poll(timeout):
        raise KeeperError(f"the keeper did not answer within {timeout:g} s")
    data = conn.recv_bytes(MAX_MESSAGE)
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise KeeperError(f"unreadable message from the keeper: {exc}") from exc
    if not isinstance(message, dict):
        raise KeeperError("unreadable message from the keeper: not an object")
    return message


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def error_message(exc: BaseException) -> dict[str, Any]:
    """An exception as a message: HpcnbError keeps its class, message, hint and evidence."""
    if isinstance(exc, FileNotFoundError):
        return {"error": "FileNotFoundError", "message": str(exc)}
    if isinstance(exc, OSError):  # a file on the cluster that cannot be read (EACCES ...)
        return {"error": "OSError", "errno": exc.errno, "message": exc.strerror or str(exc),
                "filename": exc.filename}
    if isinstance(exc, HpcnbError):
        evidence = {k: getattr(exc, k) for k in ("argv", "exit_status", "stderr") if hasattr(exc, k)}
        return {"error": type(exc).__name__, "message": exc.message, "hint": exc.hint, **evidence}
    return {"error": "KeeperError", "message": f"{type(exc).__name__}: {exc}"}


def raise_error(message: dict[str, Any]) -> None:
    """Raise what an error message carries (nothing when it is not an error)."""
    name = message.get("error")
    if name is None:
        return
    text = str(message.get("message", ""))
    if name == "FileNotFoundError":
        raise FileNotFoundError(text)
    if name == "OSError":
        errno_, filename = message.get("errno"), message.get("filename")
        if isinstance(errno_, int):
            raise OSError(errno_, text, filename) if filename else OSError(errno_, text)
        raise OSError(text)
    cls = getattr(errors, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, HpcnbError)):
        cls = KeeperError
    # Rebuilt as it was, without running the subclass's __init__ again (CommandError's adds the
    # command to its message, which the message already has).
    exc = cls.__new__(cls)
    HpcnbError.__init__(exc, text, hint=message.get("hint"))
    for name in ("argv", "exit_status", "stderr"):
        if name in message:
            setattr(exc, name, message[name])
    raise exc
