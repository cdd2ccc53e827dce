"""A job's node beyond the notebook: a byte stream to its sshd over the cluster's login (what
`hpcnb proxy` gives `ssh` as a ProxyCommand), and the `ssh` command line for `hpcnb ssh` that
rides it.

The stream takes the same route and login as the tunnel: through the keeper when there is one
(hpcnb.keeper; no new login, no prompt), an `ssh -W` on the master with the OpenSSH backend, or a
direct-tcpip channel of this command's own login. The node's own sshd then authenticates the user
by key, as `ssh node` on the login host would, and its host key is checked strictly under the
node's name (the cluster's known_hosts, then the user's).

Where a site allows no SSH to compute nodes (node_access = "scheduler"), `hpcnb ssh` steps into
the job through the scheduler instead (step_in; hpcnb.terminal).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcnb.errors import JobEnded, UsageError
from hpcnb.pump import StdioEnd, splice

NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")


def proxy(cluster: Any, host: str, port: int) -> int:
    """Join this process's stdin/stdout to host:port as seen from the login host, until either
    side ends; the exit status for the ProxyCommand."""
    remote = cluster.remote
    if cluster.openssh:
        remote.ensure_master()
        return subprocess.call([remote.ssh, *remote.options, "-W", f"{host}:{port}", "--", remote.host],
                               env=remote._env())
    if cluster.kept:
        splice(StdioEnd(), remote.open_stream(host, port))
        return 0
    from hpcnb.ssh.reconnect import RETRYABLE  # paramiko: only on this path

    splice(StdioEnd(), remote.open_tcp(host, port), RETRYABLE)
    return 0


def running_node(cluster: Any, job_id: str) -> str:
    """The node the job runs on (JobEnded when it has ended, UsageError while queued)."""
    status = cluster.session(job_id, running=True).status
    if status is None or not status.node:
        raise UsageError(f"job {job_id} has no node yet ({status.state.value if status else 'unknown'})",
                         hint="wait until `hpcnb list` shows it running")
    if status.state.is_final:
        raise JobEnded(f"job {job_id} has ended ({status.state.value})")
    node = str(status.node)
    if not NODE_RE.match(node):  # it reaches ssh's %h and an ssh config's HostName
        raise UsageError(f"the scheduler names node {node!r}, which is not a host name")
    return node


def _token_safe(word: str) -> str:
    # ssh expands %-tokens in a ProxyCommand before its shell sees it: a literal % is %%.
    return shlex.quote(word).replace("%", "%%")


# What decides the config, store, keepers and ssh config `hpcnb proxy` uses. `hpcnb code`'s Host
# entry is run later by VS Code, whose environment may not have them: they are pinned in the entry.
PINNED_ENV = ("HPCNB_CONFIG", "HPCNB_STATE_DIR", "HPCNB_RUNTIME_DIR", "HPCNB_SSH_CONFIG")


def _pinned_env() -> list[str]:
    pinned = [f"{name}={Path(value).expanduser().absolute()}"
              for name in PINNED_ENV if (value := os.environ.get(name))]
    return ["env", *pinned] if pinned else []


def ssh_argv(cluster: Any, node: str, command: Sequence[str], *, tty: bool,
             accept_new_host_key: bool, hpcnb: Sequence[str] = (sys.executable, "-m", "hpcnb")) -> list[str]:
    """`ssh` to the job's node through `hpcnb proxy` (every word quoted; host keys strict)."""
    cfg = cluster.cfg
    if shutil.which("ssh") is None:
        raise UsageError("`hpcnb ssh` and `hpcnb code` need OpenSSH's `ssh` on PATH")
    proxy_words = [*_pinned_env(), *hpcnb, "proxy", "--cluster", cluster.name]
    proxy_command = " ".join([*(_token_safe(w) for w in proxy_words), "%h", "%p"])
    argv = ["ssh", "-o", f"ProxyCommand={proxy_command}",
            "-o", f"StrictHostKeyChecking={'accept-new' if accept_new_host_key else 'yes'}"]
    if cfg.known_hosts:
        argv += ["-o", f'UserKnownHostsFile="{cfg.known_hosts}" ~/.ssh/known_hosts']
    from hpcnb.openssh.options import config_file_option  # pure: no paramiko, no process

    argv += config_file_option(os.environ)
    remote = cluster.remote
    if not cfg.user and callable(getattr(remote, "check_login", None)):
        remote.check_login()  # the login's user (an ssh config alias may name it): the node's too
    user = cfg.user or getattr(remote, "user", None)
    if user:
        argv += ["-l", str(user)]
    if cfg.identity_file:
        argv += ["-i", cfg.identity_file]
    # The command's words as ssh takes them: joined, for the node's shell (as `ssh node CMD`).
    return [*argv, "-t" if tty else "-T", "--", node, *command]


def step_in(cluster: Any, job_id: str, command: tuple[str, ...]) -> int | list[str]:
    """`hpcnb ssh` through the scheduler: the command's exit status, or (OpenSSH backend) the
    `ssh -t` argv to exec, which does the terminal itself over the master."""
    from hpcnb import terminal
    from hpcnb.remote import shell_command

    running_node(cluster, job_id)
    scheduler = cluster.scheduler
    pty = terminal.Pty.here() if terminal.wants_pty(command) else None
    argv = scheduler.step_in_argv(job_id, command, pty is not None)
    if argv is None:
        raise UsageError(f"{cluster.name} has node_access = \"scheduler\", but {scheduler.name} cannot step "
                         f"into a running job from the login host: {scheduler.step_in_refusal}",
                         hint='that needs SSH to the job\'s node: node_access = "ssh"')
    line = shell_command(argv)
    remote = cluster.remote
    if cluster.openssh:
        remote.ensure_master()
        return [remote.ssh, *remote.options, "-t" if pty else "-T", "--", remote.host, line]
    if cluster.kept:
        status = remote.run_terminal(line, pty)
    else:  # a session of the login's, waited for when sshd's MaxSessions is reached (hpcnb.ssh.sessions)
        with remote.login().session(line) as chan:
            status = terminal.run_on_channel(chan, line, pty)
    return 255 if status < 0 else status  # no status: the channel closed first (ssh says 255)
