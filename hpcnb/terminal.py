"""`hpcnb ssh` on a cluster without SSH to its compute nodes (node_access = "scheduler"): a command
on the login host that steps into the running job (Slurm: `srun --jobid --overlap --pty`,
Scheduler.step_in_argv), over hpcnb's own login, joined to this terminal as `ssh -t` joins it.

  * With a terminal, it is put in raw mode (every key, Ctrl-C included, goes to the far pty, whose
    line discipline turns ^C into SIGINT there) and restored on the way out, whatever happens; a
    window size change (SIGWINCH) is passed on.
  * Without one (a pipe, a file, a script), no pty is asked for: bytes as they are, and the end of
    stdin is passed on as EOF.

The channel: the keeper's "command" request where there is a keeper (hpcnb.keeper.server), a
session channel of this command's own paramiko login otherwise. The OpenSSH backend needs none of
this: `ssh -t` over its master does it (hpcnb.cli.node).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hpcnb.pump import READ, End, StdioEnd


@dataclass(frozen=True)
class Pty:
    """The terminal the far side should give the command."""

    term: str
    cols: int
    rows: int

    @classmethod
    def here(cls) -> Pty:
        size = shutil.get_terminal_size()
        return cls(os.environ.get("TERM") or "xterm", size.columns, size.lines)


def wants_pty(command: tuple[str, ...]) -> bool:
    """As ssh decides: a pty for a shell, or for a command when stdin is a terminal."""
    return sys.stdin.isatty() and (not command or sys.stdout.isatty())


@contextlib.contextmanager
def raw_terminal(on_resize: Callable[[int, int], None]) -> Iterator[None]:
    """This terminal in raw mode, SIGWINCH passed on as (cols, rows); restored on leaving."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def resized(_sig: int, _frame: object) -> None:
        size = shutil.get_terminal_size()
        with contextlib.suppress(Exception):  # the far side went away: the pump ends by itself
            on_resize(size.columns, size.lines)

    previous = signal.signal(signal.SIGWINCH, resized)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)


def join(far: End, pty: Pty | None, on_resize: Callable[[int, int], None]) -> None:
    """This process's stdin -> far (then EOF) and far -> stdout, until the far side ends. Its end
    is what ends it: stdin may never end (a terminal), so that copy is left to a daemon thread."""
    local = StdioEnd()

    def send() -> None:
        with contextlib.suppress(OSError, EOFError):
            while data := local.recv(READ):
                far.sendall(data)
            far.shutdown(socket.SHUT_WR)

    with raw_terminal(on_resize) if pty is not None else contextlib.nullcontext():
        threading.Thread(target=send, name="stdin", daemon=True).start()
        with contextlib.suppress(OSError, EOFError):
            while data := far.recv(READ):
                local.sendall(data)
    sys.stdout.flush()


def run_on_channel(chan: Any, command: str, pty: Pty | None) -> int:
    """COMMAND (one shell line) on a new session channel (paramiko's; its opener closes it); its
    status."""
    if pty is not None:
        chan.get_pty(term=pty.term, width=pty.cols, height=pty.rows)
    chan.exec_command(command)
    join(chan, pty, lambda cols, rows: chan.resize_pty(width=cols, height=rows))
    return int(chan.recv_exit_status())
