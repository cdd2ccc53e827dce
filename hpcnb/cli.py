"""The `hpcnb` command: flags in, tables and JSON out, errors to one line and an exit code.

Only click is imported at start-up (so `hpcnb --help` is fast); each command imports what it needs.
This is the only module that prints to the user or chooses the process's exit status.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

import click

from hpcnb.cli_ui import (
    UI,
    Progress,
    accept_key_option,
    cluster_option,
    job_id_argument,
    make_context,
    say,
)

EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70


def _context(cluster: str | None, accept_new_host_key: bool = False):
    from hpcnb.config import load_cluster

    return make_context(load_cluster(cluster), accept_new_host_key)


def _store():
    from hpcnb.paths import state_dir
    from hpcnb.store import Store

    return Store(state_dir() / "sessions.db")


def _sigterm_is_interrupt() -> None:
    """SIGTERM (and Ctrl-Break on Windows) detach exactly like Ctrl-C: the job keeps running.

    Guarded: a signal the platform lacks is skipped, and signal.signal() only works in the main
    thread (ValueError elsewhere, e.g. when hpcnb is driven from another program's thread)."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, handler)


def _detach_note(cluster: str, job_id: str) -> None:
    say(f"detached; job {job_id} keeps running.\n"
        f"  attach again: hpcnb attach {job_id} --cluster {cluster}\n"
        f"  end it:       hpcnb cancel {job_id} --cluster {cluster}")


def _open_browser(url: str) -> None:
    from hpcnb.browser import open_url

    started, how = open_url(url)
    if not started:
        say(f"not opening a browser ({how}); open the URL above yourself")


def _hold(ctx, store, job_id: str, handshake, port: int | None, no_browser: bool,
          node: str | None, progress: Progress) -> None:
    from hpcnb.attach import hold

    def ready(attached) -> None:
        progress.done("tunnel", f"127.0.0.1:{attached.local_port}")
        click.echo(attached.url)
        sys.stdout.flush()
        say("Ctrl-C detaches (the job keeps running)")
        if not no_browser:
            _open_browser(attached.url)

    try:
        hold(ctx, store, job_id, handshake, port=port, on_ready=ready, node=node)
    except KeyboardInterrupt:
        _detach_note(ctx.cfg.name, job_id)


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
      hpcnb logs JOBID                         # the job's output
      hpcnb doctor                             # is this cluster ready? (SSH, scheduler, Jupyter)
      hpcnb sites                              # the shipped site configs
      hpcnb config init --from perlmutter      # write a starter config

    Colour only on a terminal and never with NO_COLOR set. Exit codes: see README.
    """
    from hpcnb.cli_ui import setup_logging

    if quiet and verbose:
        raise click.UsageError("-q and -v contradict each other: use one")
    UI.quiet, UI.verbose = quiet, verbose
    setup_logging(verbose)


@cli.command()
@cluster_option
@click.option("--partition", "-p", help="Partition (Slurm) or queue (PBS).")
@click.option("--hours", help="Walltime in hours, e.g. 4 or 0.5 [default: 1].")
@click.option("--time", "time_", metavar="HH:MM:SS", help="Walltime as [D-]HH:MM:SS (instead of --hours).")
@click.option("--account", "-A", help="Account / project to charge.")
@click.option("--cpus", help="CPU cores.")
@click.option("--mem", help="Memory, e.g. 16G.")
@click.option("--gpus", help="GPUs.")
@click.option("--name", help="Job name [default: hpcnb].")
@click.option("--notebook-dir", help="Folder on the cluster Jupyter opens in [default: home].")
@click.option("--port", type=click.IntRange(1, 65535), help="Local port for the tunnel [default: free].")
@click.option("--no-browser", is_flag=True, help="Print the URL; do not open a browser.")
@click.option("--no-attach", is_flag=True, help="Return once the notebook is ready.")
@click.option("--dry-run", is_flag=True, help="Print the job script; submit nothing.")
@accept_key_option
def submit(cluster, partition, hours, time_, account, cpus, mem, gpus, name, notebook_dir, port,
           no_browser, no_attach, dry_run, accept_new_host_key) -> None:
    """Submit a notebook job, wait for it, tunnel to it and open the browser."""
    from hpcnb.config import load_cluster
    from hpcnb.render import render_script
    from hpcnb.request import build_request

    cfg = load_cluster(cluster)
    request = build_request(cfg, partition=partition, hours=hours, time=time_, account=account,
                            cpus=cpus, mem=mem, gpus=gpus, name=name, notebook_dir=notebook_dir)
    script = render_script(cfg, request, cfg.scheduler)
    if dry_run:
        click.echo(script, nl=False)
        return
    from hpcnb import session

    _sigterm_is_interrupt()
    progress = Progress()
    with make_context(cfg, accept_new_host_key, notify=progress.note) as ctx, _store() as store:
        job_id = session.submit(ctx, store, request, script)
        say(f"submitted job {job_id} to {cfg.name}")
        try:
            with progress:
                handshake = session.wait_until_ready(ctx, store, job_id, on_progress=progress)
                if no_attach:
                    progress.done("ready")
        except KeyboardInterrupt:
            _detach_note(cfg.name, job_id)
            return
        if no_attach:
            click.echo(job_id)
            say(f"attach: hpcnb attach {job_id} --cluster {cfg.name}")
            return
        record = store.get(cfg.name, job_id)
        _hold(ctx, store, job_id, handshake, port, no_browser, record.node if record else None, progress)


@cli.command()
@job_id_argument
@cluster_option
@click.option("--port", type=click.IntRange(1, 65535), help="Local port for the tunnel [default: free].")
@click.option("--no-browser", is_flag=True, help="Print the URL; do not open a browser.")
@accept_key_option
def attach(job_id, cluster, port, no_browser, accept_new_host_key) -> None:
    """Tunnel to a running session again (from any laptop)."""
    from hpcnb import session
    from hpcnb.config import load_cluster
    from hpcnb.errors import JobEnded

    _sigterm_is_interrupt()
    progress = Progress()
    cfg = load_cluster(cluster)
    with make_context(cfg, accept_new_host_key, notify=progress.note) as ctx, _store() as store:
        status = session.known_status(ctx, store, job_id)
        if status.state.is_final:
            raise JobEnded(f"job {job_id} has ended ({status.state.value})",
                           hint=f"hpcnb logs {job_id} --cluster {ctx.cfg.name}")
        _remember(ctx, store, job_id, status)
        try:
            handshake = session.read_handshake(ctx, job_id)
            if handshake is None or session.read_ended(ctx, job_id) is not False:
                with progress:
                    handshake = session.wait_until_ready(ctx, store, job_id, on_progress=progress)
        except KeyboardInterrupt:
            _detach_note(ctx.cfg.name, job_id)
            return
        _hold(ctx, store, job_id, handshake, port, no_browser, status.node, progress)


def _remember(ctx, store, job_id: str, status) -> None:
    """A session started from another laptop becomes known to this one's store."""

    from hpcnb.store import SessionRecord

    if store.get(ctx.cfg.name, job_id) is None:
        now = time.time()
        store.add(SessionRecord(
            cluster=ctx.cfg.name, job_id=job_id, name=status.name, scheduler=ctx.cfg.scheduler,
            partition=status.partition, tunnel=ctx.cfg.tunnel, submitted_at=now,
            state=status.state.value, node=status.node, time_left_s=status.time_left_s, updated_at=now))


@cli.command(name="list")
@cluster_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of a table.")
@click.option("--all", "include_ended", is_flag=True, help="Include sessions that have ended.")
@accept_key_option
def list_(cluster, as_json, include_ended, accept_new_host_key) -> None:
    """Your sessions on the cluster: state, node, time left."""
    from hpcnb import session

    with _context(cluster, accept_new_host_key) as ctx, _store() as store:
        records = session.refresh(ctx, store, include_ended=include_ended)
    rows = [{
        "job_id": r.job_id, "cluster": r.cluster, "name": r.name, "state": r.state,
        "partition": r.partition, "node": r.node,
        "time_left": r.time_left_s if r.ended_at is None else None,
        "submitted_at": r.submitted_at, "tunnel": r.tunnel,
    } for r in records]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        say(f"no {'' if include_ended else 'active '}sessions on {ctx.cfg.name}"
            + ("" if include_ended else " (--all shows ended ones)"))
        return
    from tabulate import tabulate

    from hpcnb.request import slurm_time

    def _hms(seconds: int | None) -> str:
        return "-" if seconds is None else slurm_time(seconds)

    table = [[r["job_id"], r["cluster"], r["name"] or "", r["state"], r["partition"] or "",
              r["node"] or "", _hms(r["time_left"])] for r in rows]
    click.echo(tabulate(table, headers=["JOB ID", "CLUSTER", "NAME", "STATE", "PARTITION", "NODE",
                                        "TIME LEFT"]))


@cli.command()
@job_id_argument
@cluster_option
@accept_key_option
def cancel(job_id, cluster, accept_new_host_key) -> None:
    """End a session (scancel / qdel)."""
    from hpcnb import session

    with _context(cluster, accept_new_host_key) as ctx, _store() as store:
        status = session.cancel(ctx, store, job_id)
    say(f"job {job_id}: {status.state.value}")


@cli.command()
@job_id_argument
@cluster_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@accept_key_option
def logs(job_id, cluster, follow, accept_new_host_key) -> None:
    """The job's output (read over the login connection)."""
    from hpcnb import session

    out = click.get_binary_stream("stdout")
    with _context(cluster, accept_new_host_key) as ctx, _store() as store:
        try:
            for chunk in session.logs(ctx, store, job_id, follow=follow):
                out.write(chunk)
                out.flush()
        except KeyboardInterrupt:
            pass


from hpcnb.cli_admin import config, doctor, sites  # noqa: E402 - they use the shared group options

cli.add_command(doctor)
cli.add_command(sites)
cli.add_command(config)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error becomes one line on stderr and a documented exit code."""
    from hpcnb.errors import HpcnbError

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
