"""What hpcnb passes to the system `ssh`, and what it reads back: pure, no processes.

Values reach `ssh` as argv words (never through a local shell); the remote command is one string
built by hpcnb.remote.shell_command, the quoting point the paramiko backend uses too. Host keys
stay strict: hpcnb never passes StrictHostKeyChecking=no nor a /dev/null known_hosts; a user
config's `no`/`off` is raised to `yes` (as the paramiko backend treats it), and
--accept-new-host-key maps to `accept-new` (ssh_config(5)).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcnb.errors import AuthenticationFailed, ConnectionLost, HostKeyError, SSHError

CONNECT_TIMEOUT_S = 10
DEFAULT_SERVER_ALIVE_S = 30  # hpcnb.ssh.route.DEFAULT_KEEPALIVE_S: both backends give up alike
# What ssh(1) prints when the connection ends under a command (OpenSSH packet.c sshpkt_fatal,
# clientloop.c; "Broken pipe" from a ControlMaster's client, mux.c): the command may have run.
LOST_MARKS = ("closed by remote host", "Connection closed by", "Connection reset by", "Broken pipe")
VERSION_RE = re.compile(r"OpenSSH_for_Windows_[\w.]+|OpenSSH_[\w.]+")


@dataclass(frozen=True)
class Control:
    """The ControlMaster to use: the user's own (their ssh config's ControlPath, already running),
    or hpcnb's (started on first use, kept `persist` seconds after the last), or none (Windows)."""

    kind: str  # "yours" | "hpcnb" | "none"
    path: str | None = None
    persist_s: int = 0


def config_file_option(env: Mapping[str, str]) -> list[str]:
    """`-F FILE` when $HPCNB_SSH_CONFIG names the ssh config hpcnb reads instead of ~/.ssh/config
    (as the paramiko backend does); a missing file is an empty config there too (ssh(1) -F none)."""
    config = env.get("HPCNB_SSH_CONFIG")
    if not config:
        return []
    return ["-F", config if Path(config).expanduser().exists() else "none"]


def quote_path(path: str) -> str:
    """A path inside an -o value: ssh_config(5) splits on whitespace unless double-quoted."""
    return f'"{path}"' if any(c.isspace() for c in path) else path


def host_key_option(effective: Mapping[str, str], accept_new: bool) -> list[str]:
    """StrictHostKeyChecking: accept-new when asked (flag or the user's own config), else yes."""
    mode = effective.get("stricthostkeychecking", "ask").lower()
    if accept_new or mode == "accept-new":
        return ["-o", "StrictHostKeyChecking=accept-new"]
    return ["-o", "StrictHostKeyChecking=yes"]  # never `no`; `ask` has no terminal to ask on


def base_options(cfg: Any, effective: Mapping[str, str], control: Control, *,
                 accept_new: bool, node_hop: bool = False) -> list[str]:
    """The options for every `ssh` of this cluster: its explicit values, host keys, the master.
    node_hop: for the ssh to a node (through the login's master by its ProxyCommand): not the
    login host's port, and no ControlPath (the login's master is not the node's)."""
    opts: list[str] = ["-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
    if cfg.user:
        opts += ["-l", cfg.user]
    if cfg.port and not node_hop:
        opts += ["-p", str(cfg.port)]
    if cfg.identity_file:
        opts += ["-i", cfg.identity_file]
    if cfg.known_hosts:
        # The cluster's file first (it receives accepted keys), then the user's usual ones.
        files = [cfg.known_hosts, *effective.get("userknownhostsfile", "~/.ssh/known_hosts").split()]
        opts += ["-o", "UserKnownHostsFile=" + " ".join(quote_path(f) for f in dict.fromkeys(files))]
    opts += host_key_option(effective, accept_new)
    # A command never becomes a master itself (a master started by a command would hold its
    # output pipes open): the master is started on its own (master_options), and commands ride it.
    opts += ["-o", "ControlMaster=no"]
    if node_hop or control.kind == "none":
        opts += ["-o", "ControlPath=none"]
    elif control.kind == "hpcnb" and control.path:
        opts += ["-o", f"ControlPath={quote_path(control.path)}"]
    return opts


def master_options(control: Control, effective: Mapping[str, str] | None = None) -> list[str]:
    """Starting the master: authenticate, then go to the background (-f) holding the connection
    (-N), for `persist_s` after its last client (0: until `ssh -O exit`). With no
    ServerAliveInterval in the user's config, the paramiko backend's 30 s: a master on a login
    node that died (no FIN, no RST) then exits after 30 s x ServerAliveCountMax (3), and the next
    command starts one through whichever of the name's login nodes answers; without it, every
    command through the master would hang on the dead node."""
    persist = str(control.persist_s) if control.persist_s else "yes"
    alive = (effective or {}).get("serveraliveinterval", "0")
    return ["-M", "-N", "-f", "-o", f"ControlPersist={persist}",
            *(["-o", f"ServerAliveInterval={DEFAULT_SERVER_ALIVE_S}"] if alive == "0" else [])]


def parse_effective(text: str) -> dict[str, str]:
    """`ssh -G HOST` output (one `keyword value` per line, lower-case keywords) -> a dict; a
    keyword given several times (identityfile) keeps its first value."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and key not in found:
            found[key.lower()] = value.strip()
    return found


def user_control_path(effective: Mapping[str, str]) -> str | None:
    """The user's own ControlPath, when their config sets one (`ssh -G` expands its tokens)."""
    path = effective.get("controlpath", "none")
    return None if path.lower() == "none" else path


def version(text: str) -> str | None:
    """`ssh -V`'s answer (on stderr) -> "OpenSSH_9.2p1" (None when it is not OpenSSH)."""
    found = VERSION_RE.search(text)
    return found.group(0) if found else None


def classify(stderr: str, target: str, command: Sequence[str] = ()) -> SSHError:
    """ssh exited 255 (its own failure, ssh(1) EXIT STATUS): the error that says which one."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else "ssh exited 255"
    if any("Host key verification failed" in ln or "REMOTE HOST IDENTIFICATION HAS CHANGED" in ln
           for ln in lines):
        return HostKeyError(f"ssh refused the host key of {target}: {last}",
                            hint="check its fingerprint with the centre's documentation, then run "
                                 "again with --accept-new-host-key (a changed key is never accepted)")
    if any("Permission denied" in ln or "Too many authentication failures" in ln for ln in lines):
        return AuthenticationFailed(f"authentication failed for {target}: {last}")
    what = f" running `{' '.join(command)}`" if command else ""
    if command and any(mark in ln for ln in lines for mark in LOST_MARKS):
        return ConnectionLost(f"ssh to {target} failed{what}: {last}")
    return SSHError(f"ssh to {target} failed{what}: {last}")
