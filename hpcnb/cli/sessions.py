"""`hpcnb submit`, `attach`, `list`, `cancel`, `logs`: flags in, the Python API (hpcnb.cluster,
hpcnb.session) does the work, the URL / tables / JSON out.

Only click at import time; each command imports the API when it runs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from hpcnb.cli.options import (
    accept_key_option,
    cluster_option,
    job_id_argument,
    json_option,
    no_browser_option,
    notify_option,
    port_option,
)
from hpcnb.cli.output import duration, print_json, print_table, say

if TYPE_CHECKING:
    from hpcnb.cli.status import StatusTicker
    from hpcnb.cluster import Cluster
    from hpcnb.session import Session


def sigterm_is_interrupt() -> None:
    """SIGTERM (and Ctrl-Break on Windows) detach exactly like Ctrl-C: the job keeps running.

    Guarded: a signal the platform lacks is skipped, and signal.signal() only works in the main
    thread (ValueError elsewhere, e.g. when hpcnb is driven from another program's thread)."""
    import signal  # here: its enums cost `hpcnb list`, which never waits, ~1 ms of start (issue 15)

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, handler)


def _cluster(name: str | None, accept_new_host_key: bool = False, notify: Any = None,
             desk: Desktop | None = None) -> Cluster:
    from hpcnb.cluster import Cluster

    target = Cluster(name, accept_new_host_key=accept_new_host_key, notify=notify or say,
                     alert=desk.alert if desk else None)
    if desk is not None:
        desk.configured = target.cfg.notify
    return target


class Desktop:
    """One command's desktop notifications (hpcnb.desktop): --notify/--no-notify, else the
    cluster's `notify`. Never the token: a notification centre keeps a history."""

    def __init__(self, flag: bool | None) -> None:
        self.flag, self.configured, self.queued = flag, True, False

    @property
    def on(self) -> bool:
        return self.configured if self.flag is None else self.flag

    def alert(self, message: str) -> None:
        if self.on:
            from hpcnb import desktop

            desktop.notify("hpcnb", message)

    def ready(self, session: Session, local_port: int | None) -> None:
        """The notebook of a job that had to queue is up (not worth a notification otherwise)."""
        if self.queued:
            where = (f"its notebook is on 127.0.0.1:{local_port}" if local_port else
                     f"hpcnb attach {session.job_id} --cluster {session.cluster.name}")
            self.alert(f"job {session.job_id} started on {session.node}: {where}")


def _detach_note(cluster: str, job_id: str) -> None:
    say(f"detached; job {job_id} keeps running.\n"
        f"  attach again: hpcnb attach {job_id} --cluster {cluster}\n"
        f"  end it:       hpcnb cancel {job_id} --cluster {cluster}")


def _open_browser(url: str) -> None:
    from hpcnb.browser import open_url

    started, how = open_url(url)
    if not started:
        say(f"not opening a browser ({how}); open the URL above yourself")


def _hold(session: Session, port: int | None, no_browser: bool, ticker: StatusTicker,
          extra: Sequence[tuple[int, int]] = (), desk: Desktop | None = None, browse_extra: bool = False
          ) -> None:
    """The tunnel, its URL on stdout, the browser; serve until Ctrl-C / SIGTERM (detach).
    extra: the node's other ports (config `ports`, `hpcnb forward`) beside the notebook's;
    browse_extra: the browser opens the first of those (`hpcnb forward`), not the notebook.
    A job the scheduler requeues is waited for, and the tunnel moves to its new run on the same
    local port (the URL's token is the new run's: printed again; the browser is not reopened)."""
    from hpcnb.errors import JobRequeued

    ports = [(p, 0) for p in session.cluster.cfg.ports if p not in dict(extra)] + list(extra)
    used: dict[str, Any] = {"port": port, "extra": ports}
    first = True
    try:
        while True:
            try:
                _serve(session, used, no_browser or not first, ticker, desk, browse_extra)
                return
            except JobRequeued as requeued:
                say(f"{requeued.message}; the tunnel follows it on 127.0.0.1:{used['port']}")
                first = False
                if not _wait(session, ticker, desk):
                    return
    except KeyboardInterrupt:
        _detach_note(session.cluster.name, session.job_id)


def _serve(session: Session, used: dict[str, Any], no_browser: bool, ticker: StatusTicker,
           desk: Desktop | None, browse_extra: bool) -> None:
    """One tunnel to the notebook's current run, held until detach. `used`: the local ports to
    listen on (None / 0: free ones), then the ones it did, for the next run's tunnel."""
    with session.tunnel(used["port"], extra_ports=used["extra"]) as tunnel:
        used["port"], used["extra"] = tunnel.local_port, list(tunnel.extra.items())
        ticker.done("tunnel", f"127.0.0.1:{tunnel.local_port}")
        click.echo(tunnel.url)
        if tunnel.password is not None:  # stderr (stdout's lines are URLs), even with -q
            click.echo(f"{tunnel.app} password: {tunnel.password}", err=True)
        for node_port, local_port in tunnel.extra.items():
            click.echo(f"http://127.0.0.1:{local_port}/  (port {node_port} on {session.node})")
        sys.stdout.flush()
        if desk is not None:
            desk.ready(session, tunnel.local_port)
        say("Ctrl-C detaches (the job keeps running)")
        if not no_browser:
            first = next(iter(tunnel.extra.values()), None) if browse_extra else None
            _open_browser(f"http://127.0.0.1:{first}/" if first else tunnel.url)
        tunnel.hold(None)


def _wait(session: Session, ticker: StatusTicker, desk: Desktop | None = None) -> bool:
    """Wait for the notebook with the status line; False when Ctrl-C detached."""

    def on_event(event: Any) -> None:
        if desk is not None and event.phase == "queued":
            desk.queued = True
        ticker(event)

    try:
        with ticker:
            session.wait_ready(on_event=on_event)
    except KeyboardInterrupt:
        _detach_note(session.cluster.name, session.job_id)
        return False
    return True


@click.command()
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
@click.option("--app", help="What to start: jupyter, code-server, rstudio or a config's own "
              "[default: the config's app, else jupyter]; `hpcnb sites NAME` lists them.")
@port_option
@no_browser_option
@click.option("--no-attach", is_flag=True, help="Return once the notebook is ready.")
@click.option("--dry-run", is_flag=True, help="Print the job script; submit nothing.")
@notify_option
@accept_key_option
def submit(cluster: str | None, partition: str | None, hours: str | None, time_: str | None,
           account: str | None, cpus: str | None, mem: str | None, gpus: str | None,
           name: str | None, notebook_dir: str | None, app: str | None, port: int | None,
           no_browser: bool, no_attach: bool, dry_run: bool, desktop: bool | None,
           accept_new_host_key: bool) -> None:
    """Submit a notebook job, wait for it, tunnel to it and open the browser."""
    from hpcnb.cli.status import StatusTicker

    ticker, desk = StatusTicker(), Desktop(desktop)
    target = _cluster(cluster, accept_new_host_key, notify=ticker.note, desk=desk)
    request = target.request(partition=partition, hours=hours, time=time_, account=account,
                             cpus=cpus, mem=mem, gpus=gpus, name=name, notebook_dir=notebook_dir,
                             app=app)
    if dry_run:
        _say_profile(target, request.profile)
        click.echo(target.script(request), nl=False)
        return
    sigterm_is_interrupt()
    with target:
        session = target.submit(request)
        say(f"submitted job {session.job_id} to {target.name}")
        if not _wait(session, ticker, desk):
            return
        if no_attach:
            ticker.done("ready")
            click.echo(session.job_id)
            say(f"attach: hpcnb attach {session.job_id} --cluster {target.name}")
            desk.ready(session, None)
            return
        _hold(session, port, no_browser, ticker, desk=desk)


def _say_profile(target: Cluster, name: str | None) -> None:
    """Which site profile `--partition` resolved to, and what that means there."""
    profile = target.cfg.profile(name)
    if profile is not None:
        from hpcnb.profiles import summary

        say(f"profile {profile.name} of {target.name}: {summary(profile)}")


@click.command()
@job_id_argument
@cluster_option
@port_option
@no_browser_option
@notify_option
@accept_key_option
def attach(job_id: str, cluster: str | None, port: int | None, no_browser: bool, desktop: bool | None,
           accept_new_host_key: bool) -> None:
    """Tunnel to a running session again (from any laptop)."""
    from hpcnb.cli.status import StatusTicker

    sigterm_is_interrupt()
    ticker, desk = StatusTicker(), Desktop(desktop)
    with _cluster(cluster, accept_new_host_key, notify=ticker.note, desk=desk) as target:
        session = target.session(job_id, running=True)
        if _wait(session, ticker, desk):
            _hold(session, port, no_browser, ticker, desk=desk)


@click.command()
@job_id_argument
@click.argument("node_port", type=click.IntRange(1, 65535))
@cluster_option
@click.option("--local", "local_port", type=click.IntRange(1, 65535), help="Local port [default: free].")
@no_browser_option
@accept_key_option
def forward(job_id: str, node_port: int, cluster: str | None, local_port: int | None, no_browser: bool,
            accept_new_host_key: bool) -> None:
    """Another port of the job's node on 127.0.0.1 (a Dask dashboard, TensorBoard), beside the
    notebook's tunnel, until Ctrl-C. `ports = [8787, 6006]` in the config does it on every attach."""
    from hpcnb.cli.status import StatusTicker

    sigterm_is_interrupt()
    ticker = StatusTicker()
    with _cluster(cluster, accept_new_host_key, notify=ticker.note) as target:
        session = target.session(job_id, running=True)
        if _wait(session, ticker):
            _hold(session, None, no_browser, ticker, extra=[(node_port, local_port or 0)], browse_extra=True)


@click.command(name="list")
@cluster_option
@json_option
@click.option("--all", "include_ended", is_flag=True, help="Include sessions that have ended.")
@accept_key_option
def list_(cluster: str | None, as_json: bool, include_ended: bool, accept_new_host_key: bool) -> None:
    """Your sessions on the cluster: state, node, time left."""
    with _cluster(cluster, accept_new_host_key) as target:
        target.refresh_sessions()
        if as_json:
            records = target.store.list(target.name, include_ended=include_ended)
        else:
            rows = target.store.table(target.name, include_ended=include_ended)
        _tidy(target)
    if as_json:
        print_json([{
            "job_id": r.job_id, "cluster": r.cluster, "name": r.name, "state": r.state,
            "partition": r.partition, "node": r.node,
            "time_left": r.time_left_s if r.ended_at is None else None,
            "submitted_at": r.submitted_at, "tunnel": r.tunnel,
            # Where the last attach listened: the notebook, and the node's other ports (`ports`).
            "local_port": r.local_port, "ports": {str(k): v for k, v in r.forwarded().items()},
        } for r in records])
        return
    if not rows:
        say(f"no {'' if include_ended else 'active '}sessions on {target.name}"
            + ("" if include_ended else " (--all shows ended ones)"))
        return
    print_table([(*row[:6], duration(row[6])) for row in rows],
                ["JOB ID", "CLUSTER", "NAME", "STATE", "PARTITION", "NODE", "TIME LEFT"])


def _tidy(target: Any) -> None:
    from hpcnb.cli.node import tidy_code_hosts  # `hpcnb code`'s Host entries of ended jobs

    tidy_code_hosts(target)


@click.command()
@job_id_argument
@cluster_option
@accept_key_option
def cancel(job_id: str, cluster: str | None, accept_new_host_key: bool) -> None:
    """End a session (scancel / qdel)."""
    from hpcnb.session import Session

    with _cluster(cluster, accept_new_host_key) as target:
        status = Session(target, job_id).cancel()
        _tidy(target)
    say(f"job {job_id}: {status.state.value}")


@click.command()
@job_id_argument
@cluster_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@accept_key_option
def logs(job_id: str, cluster: str | None, follow: bool, accept_new_host_key: bool) -> None:
    """The job's output (read over the login connection)."""
    from hpcnb.session import Session

    out = click.get_binary_stream("stdout")
    with _cluster(cluster, accept_new_host_key) as target:
        try:
            for chunk in Session(target, job_id).logs(follow=follow):
                out.write(chunk)
                out.flush()
        except KeyboardInterrupt:
            pass


COMMANDS = (submit, attach, forward, list_, cancel, logs)
