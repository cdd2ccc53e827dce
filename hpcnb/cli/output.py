"""Output: where each kind of text goes (-q / -v), colour and the ✓/✗ marks, the debug log, tables.

Only the standard library and click at import time: this module is imported at start-up.

  * stdout carries what scripts read (URL, job id, tables, JSON); everything else goes to stderr.
  * -q: only errors and that essential stdout output.  -v: also hpcnb's own debug log on stderr,
    which includes every command run on the cluster (and how long it took).
  * colour and the ✓/✗ marks only on a terminal, and never when NO_COLOR is set (no-color.org).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import click

# logging is imported only with -v: start-up imports click and nothing else it does not need.


class Ui:
    """The group options of this run (set once by the `hpcnb` group callback)."""

    def __init__(self, quiet: bool = False, verbose: int = 0) -> None:
        self.quiet = quiet
        self.verbose = verbose

    def say(self, message: str) -> None:
        """A note on stderr (suppressed by -q)."""
        if not self.quiet:
            click.echo(message, err=True)

    def error(self, message: str) -> None:
        """Always shown."""
        click.echo(message, err=True)


UI = Ui()


def say(message: str) -> None:
    """Progress and notes go to stderr, so stdout stays clean for URLs, tables and JSON (-q: none)."""
    UI.say(message)


def is_tty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def color_enabled(stream: TextIO | None) -> bool:
    """ANSI colour only on a terminal and only when NO_COLOR is not set (any value, even empty
    counts as "set" per no-color.org; we follow the common reading: set and non-empty)."""
    return is_tty(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _can_encode(stream: TextIO | None, text: str) -> bool:
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def marks(stream: TextIO | None) -> tuple[str, str]:
    """(pass, fail) marks: coloured ✓/✗ on a capable terminal, else plain OK/FAIL."""
    if color_enabled(stream) and _can_encode(stream, "✓✗"):
        return click.style("✓", fg="green"), click.style("✗", fg="red", bold=True)
    return "OK  ", "FAIL"


def setup_logging(verbose: int) -> None:
    """-v: hpcnb's logger at DEBUG to stderr, which shows every command run on the cluster
    (hpcnb.remote) with its exit status and duration; -vv adds paramiko's log."""
    if verbose <= 0:
        return
    import logging

    log = logging.getLogger("hpcnb")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hpcnb: %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    if verbose >= 2:
        paramiko_log = logging.getLogger("paramiko")
        paramiko_log.addHandler(handler)
        paramiko_log.setLevel(logging.DEBUG)


def print_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2))


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    from tabulate import tabulate  # only for a command that prints a table

    click.echo(tabulate(rows, headers=list(headers)))


def duration(seconds: int | None) -> str:
    """Time left, as schedulers show it: HH:MM:SS, D-HH:MM:SS from a day on; "-" when unknown."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock
