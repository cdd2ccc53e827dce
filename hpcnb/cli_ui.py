"""What the commands share: group options (-q / -v), the common flags and their shell completion,
the Context maker (-v logs every command run on the cluster), the progress line, NO_COLOR and ✓/✗.

Only the standard library and click at import time: this module is imported at start-up.

  * stdout carries what scripts read (URL, job id, tables, JSON); everything else goes to stderr.
  * -q: only errors and that essential stdout output.  -v: also hpcnb's own debug log on stderr,
    which includes every command run on the cluster (and how long it took).
  * colour and the ✓/✗ marks only on a terminal, and never when NO_COLOR is set (no-color.org).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import click

# logging is imported only with -v: start-up imports click and nothing else it does not need.


def complete_clusters(ctx, param, incomplete):
    from hpcnb.cli_complete import clusters

    return clusters(ctx, param, incomplete)


def complete_jobs(ctx, param, incomplete):
    from hpcnb.cli_complete import job_ids

    return job_ids(ctx, param, incomplete)


def complete_sites(ctx, param, incomplete):
    from click.shell_completion import CompletionItem

    from hpcnb.paths import site_config_dir

    return [CompletionItem(p.stem) for p in sorted(site_config_dir().glob("*.toml"))
            if p.stem.startswith(incomplete)]


cluster_option = click.option(
    "--cluster", "-c", metavar="NAME", envvar="HPCNB_CLUSTER", shell_complete=complete_clusters,
    help="Cluster from your config or the shipped site configs [default: your default_cluster, "
         "else $HPCNB_CLUSTER, else local].",
)
job_id_argument = click.argument("job_id", shell_complete=complete_jobs)
accept_key_option = click.option(
    "--accept-new-host-key", is_flag=True,
    help="Trust a login or node host key seen for the first time (like OpenSSH accept-new); a "
         "changed key is still refused.",
)


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
    """-v: hpcnb's logger at DEBUG to stderr (-vv adds paramiko's)."""
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


class LoggedRemote:
    """A Remote that logs each command it runs (for -v); everything else is the wrapped one's."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> Any:
        import logging

        log = logging.getLogger("hpcnb.remote")
        started = time.monotonic()
        text = " ".join(str(a) for a in argv)
        log.debug("run: %s%s", text, " (script on stdin)" if stdin else "")
        result = self._inner.run(argv, stdin=stdin, timeout=timeout)
        log.debug("  -> exit %s in %.2f s%s", result.exit_status, time.monotonic() - started,
                  f"; stderr: {result.stderr.strip().splitlines()[-1]}" if result.stderr.strip() else "")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> LoggedRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


def make_context(cfg, accept_new_host_key: bool = False, notify=None):
    """Context for cfg; with -v its connections log every command they run."""
    from hpcnb.context import Context

    if UI.verbose:
        from hpcnb.cli_ui import LoggedRemote

        class LoggedContext(Context):
            def connect(self):
                return LoggedRemote(super().connect())

        return LoggedContext(cfg, notify=notify or say, accept_new_host_key=accept_new_host_key)
    return Context(cfg, notify=notify or say, accept_new_host_key=accept_new_host_key)


class Progress:
    """The status line of one command (hpcnb.progress), with a 1 s ticker for the elapsed time on
    a terminal. Nothing at all with -q."""

    def __init__(self) -> None:
        from hpcnb.cli_ui import is_tty
        from hpcnb.progress import StatusLine

        def write(text: str) -> None:
            if not UI.quiet:
                click.echo(text, err=True, nl=False)

        self.line = StatusLine(write, is_tty(sys.stderr) and not UI.quiet)
        self._started = time.monotonic()
        self._stop = None

    def __enter__(self) -> Progress:
        import threading

        self._started = time.monotonic()
        if self.line.is_tty:
            self._stop = threading.Event()
            threading.Thread(target=self._tick, daemon=True).start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.line.tick(time.monotonic() - self._started)

    def __call__(self, event: Any) -> None:
        self.line.update(event)

    def note(self, message: str) -> None:
        if not UI.quiet:
            self.line.note(message)

    def done(self, final_phase: str, detail: str | None = None) -> None:
        from hpcnb.progress import Event

        if self._stop is not None:
            self._stop.set()
        self.line.done(Event(final_phase, detail=detail), time.monotonic() - self._started)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # On success the line stays open: "tunnel up" (done) replaces it in place.
        if self._stop is not None:
            self._stop.set()
        if exc_type is not None:
            self.line.finish()
