"""`hpcnb ssh` and `hpcnb proxy`: the job's node beyond the notebook (hpcnb.nodeaccess)."""

from __future__ import annotations

import os
import sys

import click

from hpcnb.cli.options import accept_key_option, cluster_option, job_id_argument
from hpcnb.cli.output import say
from hpcnb.errors import UsageError


@click.command("ssh", context_settings={"ignore_unknown_options": True})
@job_id_argument
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@cluster_option
@accept_key_option
@click.pass_context
def ssh_(ctx: click.Context, job_id: str, command: tuple[str, ...], cluster: str | None,
         accept_new_host_key: bool) -> None:
    """A shell on the job's node, or one command (after --): `hpcnb ssh 123 -- nvidia-smi`.

    Over the same route and login as the tunnel (the kept connection where there is one), with
    the system ssh: terminal size and Ctrl-C behave as in `ssh -t`. The node's host key is
    checked as for any ssh (--accept-new-host-key trusts one seen for the first time). Where the
    site allows no SSH to compute nodes, node_access = "scheduler" steps into the job instead
    (Slurm: srun --jobid --overlap --pty), over the same login.
    """
    from hpcnb import nodeaccess
    from hpcnb.cluster import Cluster

    with Cluster(cluster, accept_new_host_key=accept_new_host_key) as c:
        if c.cfg.node_access == "scheduler":
            stepped = nodeaccess.step_in(c, job_id, command)
            if isinstance(stepped, int):
                ctx.exit(stepped)
            argv = stepped
        else:
            node = nodeaccess.running_node(c, job_id)
            argv = nodeaccess.ssh_argv(c, node, command, tty=not command or sys.stdin.isatty(),
                                       accept_new_host_key=accept_new_host_key)
    if os.name == "posix":
        os.execvp(argv[0], argv)  # ssh owns the terminal and the exit status from here
    import subprocess  # here, not at the top: ~4 ms of every command's start (issue 15)

    ctx.exit(subprocess.call(argv))


@click.command()
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535))
@cluster_option
@click.pass_context
def proxy(ctx: click.Context, host: str, port: int, cluster: str | None) -> None:
    """Join stdin/stdout to HOST:PORT as seen from the cluster's login host (an ssh ProxyCommand:
    `ProxyCommand hpcnb proxy --cluster C %h %p`), over hpcnb's login."""
    from hpcnb import nodeaccess
    from hpcnb.cluster import Cluster

    with Cluster(cluster) as c:
        code = nodeaccess.proxy(c, host, port)
    ctx.exit(code)


@click.command()
@job_id_argument
@cluster_option
@click.option("--dir", "folder", metavar="PATH", help="Folder to open on the node [default: your home].")
@click.option("--yes", "-y", is_flag=True, help="Agree to adding `Include hpcnb.conf` to ~/.ssh/config.")
@accept_key_option
def code(job_id: str, cluster: str | None, folder: str | None, yes: bool, accept_new_host_key: bool) -> None:
    """VS Code (Remote-SSH) on the job's node, through hpcnb's route and login.

    Writes a Host entry `hpcnb-CLUSTER-JOBID` to ~/.ssh/hpcnb.conf (its ProxyCommand is `hpcnb
    proxy`; host keys strict), included from ~/.ssh/config once with your consent, then runs
    `code --remote ssh-remote+HOST DIR` when `code` is on PATH. The entry goes when the job ends.
    """
    from hpcnb import nodeaccess, vscode
    from hpcnb.cluster import Cluster

    with Cluster(cluster, accept_new_host_key=accept_new_host_key) as c:
        if c.cfg.node_access == "scheduler":
            raise UsageError(f"VS Code's Remote-SSH needs SSH to the job's node, and {c.name} has "
                             'node_access = "scheduler"', hint=f"hpcnb ssh {job_id} steps into the job")
        node = nodeaccess.running_node(c, job_id)
        argv = nodeaccess.ssh_argv(c, node, (), tty=False, accept_new_host_key=accept_new_host_key)
        tidy_code_hosts(c)
        vscode.write_entry(c.name, job_id, vscode.entry(c.name, job_id, node, argv))
        if folder is None:
            folder = c.remote.run(["sh", "-c", 'printf %s "$HOME"']).stdout or "."
    alias = vscode.host_alias(c.name, job_id)

    def consent(what: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        return click.confirm(f"hpcnb code: {what}?", default=True, err=True)

    if not vscode.include(consent):
        say(f"wrote Host {alias} to {vscode.entries_file()}; add `{vscode.INCLUDE}` at the top of "
            f"{vscode.ssh_dir() / 'config'} (or run with --yes) so VS Code finds it")
    command = vscode.code_command(alias, folder)
    if command is None:
        say(f"VS Code's `code` is not on PATH: in VS Code, Remote-SSH: Connect to Host... {alias}")
        click.echo(f"code --remote ssh-remote+{alias} {folder}")
        return
    import subprocess  # here, not at the top: ~4 ms of every command's start (issue 15)

    subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    say(f"opening VS Code on {node} ({alias}) in {folder}")


def tidy_code_hosts(cluster: object) -> None:
    """Drop `hpcnb code` Host entries whose jobs have ended (as this laptop's store knows them)."""
    from hpcnb import vscode
    from hpcnb.schedulers import JobState

    store = cluster.store  # type: ignore[attr-defined]

    def ended(name: str, job_id: str) -> bool:
        record = store.get(name, job_id)
        if record is None or record.ended_at is not None:
            return record is not None
        return record.state in {s.value for s in JobState if s.is_final}

    vscode.prune(ended)


COMMANDS = (ssh_, proxy, code)
