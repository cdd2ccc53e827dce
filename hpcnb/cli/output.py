"""Output: where each kind of text goes (-q / -v), colour and the ✓/✗ marks, the debug log, tables.

Only the standard library and click at import time: this module is imported at start-up.

  * stdout carries what scripts read (URL, job id, tables, JSON); everything else goes to stderr.
  * -q: only errors and that essential stdout output.  -v: also hpcnb's own debug log on stderr,
    which includes every command run on the cluster (and how long it took).
  * colour and the ✓/✗ marks only on a terminal, and never when NO_COLOR is set (no-color.org).
"""

from __future__ import annotations

import os
import re
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
    click.echo(table(rows, headers))


_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
# A whole column at once (its cells joined by newlines: one regex call, not one per cell): every
# cell a number or empty. _numeric() checks first that no cell holds a newline itself.
_NUMBERS_RE = re.compile(rf"(?:{_NUMBER})?(?:\n(?:{_NUMBER})?)*")


def _cell_width(text: str) -> int:
    """Columns a terminal gives text: East Asian wide and full-width characters take two,
    combining marks none."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def _texts(column: Sequence[Any]) -> list[str]:
    """A column's cells as stripped text, None as empty (map: the loop runs in C)."""
    if None in column:
        column = ["" if v is None else v for v in column]
    return list(map(str.strip, map(str, column)))


def _numeric(joined: str, column: Sequence[str]) -> bool:
    """Whether tabulate right-aligns the column (`joined`: its cells joined by newlines): every
    cell a number or empty, one at least not empty."""
    if not joined.strip() or joined.count("\n") != len(column) - 1:  # no text, or a cell with a newline
        return False
    # Whole numbers (job ids) first, one C call a cell: the regex over 10,000 of them took ~5 ms, as
    # its repeat keeps a backtracking point per cell.
    return all(map(str.isdecimal, column)) or _NUMBERS_RE.fullmatch(joined) is not None


def _padded(column: Sequence[str], width: int, right: bool) -> list[str]:
    """A column's cells padded to `width` terminal columns (not characters), right- or
    left-aligned."""
    if right:
        return [" " * (width - _cell_width(v)) + v for v in column]
    return [v + " " * (width - _cell_width(v)) for v in column]


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain text table as tabulate's "simple" format prints it (tests/unit/test_cli_output.py
    holds them side by side): two spaces between columns, each as wide as its widest cell and
    its header + 2, numbers right-aligned, text left-aligned, a dashed rule under the headers.
    Its own code because tabulate's type detection and width tables took 400 ms for `hpcnb
    list --all` over 10,000 sessions (issue 15 wants the whole command under 150 ms): here the
    work goes column by column, in calls into C (map, join, isascii, one regex per column) rather
    than a Python loop per cell."""
    heads = [str(h) for h in headers]
    columns = [_texts(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in heads]
    joined = ["\n".join(col) for col in columns]
    ascii_only = all(text.isascii() for text in joined) and all(h.isascii() for h in heads)
    width = len if ascii_only else _cell_width
    right = [_numeric(text, col) for text, col in zip(joined, columns, strict=True)]
    widths = [max([width(head) + 2, *map(width, col)]) for head, col in zip(heads, columns, strict=True)]
    if ascii_only:  # characters are columns: one format string fills every line
        template = "  ".join(f"{{:{'>' if r else '<'}{w}}}" for r, w in zip(right, widths, strict=True))
        lines = [template.format(*heads), *(map(template.format, *columns) if columns else ())]
    else:
        padded = [_padded([head, *col], w, r)
                  for head, col, w, r in zip(heads, columns, widths, right, strict=True)]
        lines = list(map("  ".join, zip(*padded, strict=True)))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(map(str.rstrip, lines))


def duration(seconds: int | None) -> str:
    """Time left, as schedulers show it: HH:MM:SS, D-HH:MM:SS from a day on; "-" when unknown."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock
