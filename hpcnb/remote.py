"""The I/O boundary for commands and files: CommandResult, the Remote protocol, LocalRemote.

SSHRemote (hpcnb/ssh/remote.py) runs the same argv lists on a login host; LocalRemote runs them
here, for the built-in `local` scheduler and for tests. Both log every command they run, its exit
status and duration to the `hpcnb.remote` logger (shown by `hpcnb -v`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from hpcnb.errors import CommandError, last_line

_log = logging.getLogger("hpcnb.remote")


@dataclass(frozen=True)
class CommandResult:
    """What a finished command gave back. A non-zero exit is data, not an exception."""

    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@runtime_checkable
class Remote(Protocol):
    """Where scheduler commands run and job files are read."""

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0
    ) -> CommandResult:
        """Run argv (no shell). Never raises for a non-zero exit; SSHError if the connection
        fails, CommandError on timeout."""
        ...

    def read_file(self, path: str) -> bytes:
        """A file's bytes; `path` is relative to the user's home unless absolute.
        Raises plain FileNotFoundError when it is missing (callers poll for it)."""
        ...

    def close(self) -> None:
        """Release the connection (a no-op for LocalRemote)."""
        ...


def shell_command(argv: Sequence[str]) -> str:
    """argv as one command line for the login shell at the far end of SSH (which always gets a
    string): every word single-quoted by shlex.quote. The one quoting point of both SSH backends
    (hpcnb.ssh, hpcnb.openssh); nothing else builds a remote command line."""
    return " ".join(shlex.quote(str(a)) for a in argv)


Run = TypeVar("Run", bound=Callable[..., CommandResult])


def logged(run: Run) -> Run:
    """Wraps a Remote's run(): each command, and how it ended, on the `hpcnb.remote` logger."""

    @functools.wraps(run)
    def wrapper(self: Any, argv: Sequence[str], *, stdin: str | None = None,
                timeout: float = 60.0) -> CommandResult:
        started = time.monotonic()
        _log.debug("run: %s%s", " ".join(str(a) for a in argv), " (script on stdin)" if stdin else "")
        result = run(self, argv, stdin=stdin, timeout=timeout)
        tail = last_line(result.stderr)
        _log.debug("  -> exit %s in %.2f s%s", result.exit_status, time.monotonic() - started,
                   f"; stderr: {tail}" if tail else "")
        return result

    return wrapper  # type: ignore[return-value]


class LocalRemote:
    """Remote on this machine: subprocess with an argv list (never a shell), cwd = home."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        # env: the whole environment for commands (tests pass one with a temporary HOME).
        self._env = dict(env) if env is not None else None

    def _home(self) -> str:
        if self._env is not None and self._env.get("HOME"):
            return self._env["HOME"]
        return str(Path.home())

    @logged
    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0
    ) -> CommandResult:
        args = [str(a) for a in argv]
        try:
            # Own session, so a timeout can end the whole process group: subprocess.run would
            # kill only the child and then wait forever on pipes a grandchild still holds.
            proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, cwd=self._home(), env=self._env, start_new_session=True,
            )
        except OSError as exc:   # the program is missing or not executable: say which
            raise CommandError(
                f"cannot run {args[0]}: {exc.strerror or exc}", argv=args, exit_status=None,
            ) from exc
        try:
            out, err = proc.communicate(stdin if stdin is not None else "", timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            raise CommandError(
                f"command timed out after {timeout:g} s", argv=args, exit_status=None,
                stderr=_text(exc.stderr),
            ) from exc
        return CommandResult(args, proc.returncode, out, err)

    def read_file(self, path: str) -> bytes:
        full = Path(path) if Path(path).is_absolute() else Path(self._home()) / path
        return full.read_bytes()   # FileNotFoundError propagates unchanged

    def close(self) -> None:
        return None

    def __enter__(self) -> LocalRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    killpg, sigkill = getattr(os, "killpg", None), getattr(signal, "SIGKILL", None)
    if killpg is None or sigkill is None:   # Windows: no process groups to signal
        proc.kill()
    else:
        try:
            killpg(proc.pid, sigkill)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    # A grandchild that left the group may still hold the pipes: do not hang on it.
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
