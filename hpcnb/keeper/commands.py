"""A command on the kept login, run once more on a new login when the first try never started.

The keeper's login can die under a command: its login node went away (a connection dropped by
hpcnb.ssh.dial.drop_when_unanswered, or a channel open nobody answered). A command whose channel
never opened never ran (CommandNotStarted), so running it on a new login, which reaches whichever
of a name's login nodes answers, is safe, a submit included; a command that started is never run
twice. And only while the hpcnb command that asked still waits for the answer: after that nobody
would hear it, and a submit run then would be a job that no store records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from hpcnb.errors import CommandNotStarted
from hpcnb.keeper.client import LOGIN_ALLOWANCE_S
from hpcnb.remote import CommandResult

_log = logging.getLogger("hpcnb.keeper")

ANSWER_MARGIN_S = 5.0  # the answer must reach the asking command before it stops waiting


class KeptLogin(Protocol):
    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0
            ) -> CommandResult: ...
    def is_alive(self) -> bool: ...


def waits_until(timeout: float, clock: Callable[[], float] = time.monotonic) -> float:
    """When the asking command stops waiting (hpcnb.keeper.client: the command's timeout plus the
    time a login may take)."""
    return clock() + timeout + LOGIN_ALLOWANCE_S


def run_kept(login: Callable[[], KeptLogin], argv: Sequence[str], *, stdin: str | None, timeout: float,
             deadline: float, clock: Callable[[], float] = time.monotonic) -> CommandResult:
    """argv on the kept login (`login()` makes one when there is none, or it died)."""
    remote = login()
    try:
        return remote.run(argv, stdin=stdin, timeout=timeout)
    except CommandNotStarted:
        if remote.is_alive():
            raise  # refused by a live login (no session allowed): trying again would not help
        _log.info("the login connection died before `%s` started; logging in again", argv[0])
        again = login()
        left = deadline - clock() - ANSWER_MARGIN_S
        if left <= 0:
            raise  # the asking command has stopped waiting: nobody would hear the answer
        return again.run(argv, stdin=stdin, timeout=min(timeout, left))
