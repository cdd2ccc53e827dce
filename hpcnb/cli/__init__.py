"""The `hpcnb` command: flags in, tables and JSON out, errors to one line and an exit code.

    __init__.py   the group (-v / -q) and main(): every error -> one line on stderr + exit code
    sessions.py   submit, attach, forward, list, cancel, logs (over the Python API: hpcnb.cluster)
    setup.py      doctor, sites, config init / path, jupyter install
    connections.py  connections, logout: the kept logins (hpcnb.keeper)
    node.py       ssh, proxy, code: the job's node beyond the notebook (hpcnb.nodeaccess)
    options.py    the shared options and their shell completion; complete.py: completion values
    output.py     stdout vs stderr, -q / -v, colour and ✓/✗, tables and JSON
    status.py     the status line while a command waits

Only click is imported at start-up (so `hpcnb --help` is fast); each command imports what it
needs. This package is the only part of hpcnb that prints to the user or chooses the exit status.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys

import click

from hpcnb.cli.connections import COMMANDS as CONNECTION_COMMANDS
from hpcnb.cli.node import COMMANDS as NODE_COMMANDS
from hpcnb.cli.output import UI, setup_logging
from hpcnb.cli.sessions import COMMANDS as SESSION_COMMANDS
from hpcnb.cli.setup import COMMANDS as SETUP_COMMANDS

EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpcnb")
@click.option("--verbose", "-v", count=True,
              help="More detail on stderr: hpcnb's debug log, with every command run on the cluster "
                   "(-vv adds the SSH library's log).")
@click.option("--quiet", "-q", is_flag=True,
              help="Only errors and the essential output (URL, job id, tables, JSON).")
def cli(verbose: int, quiet: bool) -> None:
    """Jupyter on an HPC compute node, in one command.

    \b
      hpcnb submit --partition gpu --hours 4   # job script -> queue -> tunnel -> browser
      hpcnb list                               # your sessions: state, node, time left
      hpcnb attach JOBID                       # tunnel again, from any laptop
      hpcnb cancel JOBID                       # end it
      hpcnb ssh JOBID [-- CMD]                 # a shell (or a command) on the job's node
      hpcnb code JOBID                         # VS Code (Remote-SSH) on the job's node
      hpcnb logs JOBID                         # the job's output
      hpcnb doctor                             # is this cluster ready? (SSH, scheduler, Jupyter)
      hpcnb connections                        # the kept logins (one MFA code a day)
      hpcnb logout                             # end this cluster's kept login
      hpcnb sites                              # the shipped site configs
      hpcnb config init --from perlmutter      # write a starter config

    Colour only on a terminal and never with NO_COLOR set. Exit codes: see README.
    """
    if quiet and verbose:
        raise click.UsageError("-q and -v contradict each other: use one")
    UI.quiet, UI.verbose = quiet, verbose
    setup_logging(verbose)


for _command in (*SESSION_COMMANDS, *SETUP_COMMANDS, *CONNECTION_COMMANDS, *NODE_COMMANDS):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error becomes one line on stderr and a documented exit code."""
    from hpcnb.errors import HpcnbError

    # At exit the interpreter's last garbage collections walk every object still alive (click's,
    # the modules', a command's data) and find next to nothing to free: ~6 ms of `hpcnb list`,
    # whose target is 150 ms (issue 15). Frozen objects are left out of those walks.
    atexit.register(gc.freeze)

    try:
        code = cli.main(args=argv, prog_name="hpcnb", standalone_mode=False)
    except HpcnbError as exc:
        UI.error(f"hpcnb: error: {exc}")  # one line: the message, then the hint in parentheses
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        # click's own refusals (an unknown option, --port abc) get the same one-line form.
        where = getattr(getattr(exc, "ctx", None), "command_path", None)
        hint = f" (see `{where} --help`)" if isinstance(exc, click.UsageError) and where else ""
        UI.error(f"hpcnb: error: {exc.format_message()}{hint}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # a bug: one line unless asked for the traceback
        if os.environ.get("HPCNB_DEBUG"):
            raise
        UI.error(f"hpcnb: internal error: {type(exc).__name__}: {exc} (set HPCNB_DEBUG=1 for a traceback)")
        sys.exit(EXIT_INTERNAL)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        sys.exit(code)  # a command's ctx.exit(N): doctor's failed check
