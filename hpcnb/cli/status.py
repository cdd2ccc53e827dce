"""What `submit` and `attach` show while they wait: one status line, updated in place on a terminal.

StatusLine is pure and testable: it is given a `write` callable and whether that is a terminal.
On a terminal every update rewrites the same line (carriage return + "erase line") and the final
line ends with a newline; elsewhere (a pipe, a log file, CI) each *new* message is one plain line,
so logs carry no control characters and no repeated lines. render() is the whole transcript a
sequence of events produces, for tests.

Events are anything with `phase`, `status` and `elapsed` (hpcnb.watcher.WaitEvent), plus the
CLI's own phases "tunnel" (the local port is listening) and "detached". StatusTicker puts a
StatusLine on stderr and refreshes its elapsed time every second on a terminal.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import click

from hpcnb.cli.output import UI, is_tty

CLEAR_LINE = "\r\x1b[2K"
_NO_REASON = {"", "None", "(null)", "none"}

# Slurm's pending reasons (squeue(1) "JOB REASON CODES"), in words a notebook user understands.
_REASONS = {
    "Priority": "other jobs have priority",
    "Resources": "waiting for free nodes",
    "Dependency": "waiting for another job",
    "QOSMaxJobsPerUserLimit": "you have the most jobs this QOS allows running",
    "AssocGrpCPUMinutesLimit": "the account's CPU-minutes limit is reached",
    "ReqNodeNotAvail": "the requested nodes are not available (maintenance?)",
    "BeginTime": "waiting for its start time",
    "JobHeldUser": "held by you (scontrol release)",
    "JobHeldAdmin": "held by an administrator",
    "PartitionTimeLimit": "the time limit exceeds the partition's (it will never start)",
}


@dataclass(frozen=True)
class Event:
    """A CLI-side event (hpcnb.watcher.WaitEvent has the same first three fields)."""

    phase: str
    status: Any = None
    elapsed: float = 0.0
    detail: str | None = None


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def reason_text(reason: str | None) -> str | None:
    if reason is None or reason.strip() in _NO_REASON:
        return None
    reason = reason.strip()
    explained = _REASONS.get(reason)
    return f"{reason}: {explained}" if explained else reason


def message(event: Any) -> str:
    """The words for one event, without the elapsed time."""
    status = getattr(event, "status", None)
    phase = event.phase
    detail = getattr(event, "detail", None)
    if phase == "queued":
        text = "queued"
        why = reason_text(getattr(status, "reason", None))
        if why:
            text += f" ({why})"
        start = getattr(status, "expected_start", None)
        if start:
            text += f", expected start {start}"
        return text
    if phase == "starting":
        node = getattr(status, "node", None)
        return f"running on {node}; starting notebook" if node else "running; starting notebook"
    if phase == "unknown":
        return "the scheduler does not answer; still waiting"
    if phase == "ready":
        return "notebook ready"
    if phase == "tunnel":
        return f"tunnel up{f' on {detail}' if detail else ''}"
    return detail or phase


def line(event: Any, elapsed: float | None = None) -> str:
    """One status line: `[m:ss] words`."""
    seconds = getattr(event, "elapsed", 0.0) if elapsed is None else elapsed
    return f"[{_clock(seconds)}] {message(event)}"


class StatusLine:
    """Writes progress lines; on a terminal, in place. Thread-safe (a ticker may call tick())."""

    def __init__(self, write: Callable[[str], None], is_tty: bool) -> None:
        self._write = write
        self.is_tty = is_tty
        self._lock = threading.Lock()
        self._last: Any = None
        self._last_message: str | None = None
        self._offset = 0.0  # elapsed of the last event, for tick()
        self._open = False  # a tty line is on screen without its newline

    def update(self, event: Any) -> None:
        with self._lock:
            text = message(event)
            self._last, self._offset = event, getattr(event, "elapsed", 0.0)
            if self.is_tty:
                self._write(CLEAR_LINE + line(event))
                self._open = True
            elif text != self._last_message:
                self._write(line(event) + "\n")
            self._last_message = text

    def tick(self, elapsed: float) -> None:
        """Refresh the elapsed time of the current line (terminal only; a no-op elsewhere)."""
        with self._lock:
            if self.is_tty and self._open and self._last is not None:
                self._write(CLEAR_LINE + line(self._last, elapsed))

    def finish(self, final: str | None = None) -> None:
        """End the in-place line (newline), optionally with a last message of its own."""
        with self._lock:
            if self.is_tty and self._open:
                self._write(CLEAR_LINE + (final or line(self._last)) + "\n")
            elif final:
                self._write(final + "\n")
            self._open = False

    def done(self, event: Any, elapsed: float) -> None:
        """The last status of a wait: in place on a terminal; elsewhere only if it is news."""
        with self._lock:
            text = message(event)
            if self.is_tty and self._open:
                self._write(CLEAR_LINE + line(event, elapsed) + "\n")
            elif text != self._last_message:
                self._write(line(event, elapsed) + "\n")
            self._open = False
            self._last_message = text

    def note(self, text: str) -> None:
        """A line of its own (a warning) without losing the status line on a terminal."""
        with self._lock:
            if self.is_tty and self._open:
                self._write(CLEAR_LINE + text + "\n")
                if self._last is not None:
                    self._write(line(self._last))
            else:
                self._write(text + "\n")


def render(events: Iterable[Any], is_tty: bool, final: str | None = None) -> str:
    """Everything a StatusLine writes for these events (then finish(final))."""
    out: list[str] = []
    status = StatusLine(out.append, is_tty)
    for event in events:
        status.update(event)
    status.finish(final)
    return "".join(out)


class StatusTicker:
    """The status line of one command on stderr, with a 1 s ticker for the elapsed time on a
    terminal. Nothing at all with -q. Call it with events; `note` prints a line of its own."""

    def __init__(self) -> None:
        def write(text: str) -> None:
            if not UI.quiet:
                click.echo(text, err=True, nl=False)

        self.line = StatusLine(write, is_tty(sys.stderr) and not UI.quiet)
        self._started = time.monotonic()
        self._stop: threading.Event | None = None

    def __enter__(self) -> StatusTicker:
        self._started = time.monotonic()
        if self.line.is_tty:
            stop = self._stop = threading.Event()
            threading.Thread(target=self._tick, args=(stop,), daemon=True).start()
        return self

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            self.line.tick(time.monotonic() - self._started)

    def __call__(self, event: Any) -> None:
        self.line.update(event)

    def note(self, message: str) -> None:
        if not UI.quiet:
            self.line.note(message)

    def done(self, final_phase: str, detail: str | None = None) -> None:
        if self._stop is not None:
            self._stop.set()
        self.line.done(Event(final_phase, detail=detail), time.monotonic() - self._started)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # On success the line stays open: "tunnel up" (done) replaces it in place.
        if self._stop is not None:
            self._stop.set()
        if exc_type is not None:
            self.line.finish()
