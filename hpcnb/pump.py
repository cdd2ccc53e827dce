"""Two byte streams joined both ways until both are done: `hpcnb proxy` (this process's stdin and
stdout to a connection on the node) and a keeper's raw streams (a command's socket to an SSH
channel). Each end needs recv/sendall/shutdown/close (socket.socket and paramiko.Channel have
them; StdioEnd adapts a process's stdin and stdout). EOF in one direction is passed on as a
half-close, so `ssh` over the stream sees the other side finish.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Protocol

from hpcnb.net import CHANNEL_READ

READ = 256 * 1024


class End(Protocol):
    def recv(self, n: int, /) -> bytes: ...
    def sendall(self, data: bytes, /) -> object: ...
    def shutdown(self, how: int, /) -> object: ...
    def close(self) -> object: ...


class StdioEnd:
    """This process's stdin (read) and stdout (write) as one End."""

    def __init__(self, read_fd: int = 0, write_fd: int = 1) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd

    def recv(self, n: int) -> bytes:
        return os.read(self.read_fd, min(n, READ))

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view):]

    def shutdown(self, how: int) -> None:
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            with contextlib.suppress(OSError):
                os.close(self.write_fd)

    def close(self) -> None:
        self.shutdown(socket.SHUT_WR)


def _copy(src: End, dst: End, errors: tuple[type[BaseException], ...]) -> None:
    try:
        while data := src.recv(CHANNEL_READ if not isinstance(src, socket.socket) else READ):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except errors:
        for end in (src, dst):
            with contextlib.suppress(*errors):
                end.shutdown(socket.SHUT_RDWR)


def splice(a: End, b: End, errors: tuple[type[BaseException], ...] = (OSError, EOFError)) -> None:
    """Copy a->b and b->a until both directions end; then close both."""
    other = threading.Thread(target=_copy, args=(b, a, errors), name="pump", daemon=True)
    other.start()
    _copy(a, b, errors)
    other.join()
    for end in (a, b):
        with contextlib.suppress(*errors):
            end.close()
