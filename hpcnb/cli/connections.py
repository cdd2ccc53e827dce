"""`hpcnb connections` and `hpcnb logout`: the kept logins (hpcnb.keeper) on this machine."""

from __future__ import annotations

import time
from typing import Any

import click

from hpcnb.cli.options import cluster_option, json_option
from hpcnb.cli.output import duration, print_json, print_table, say


def _since(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def _tunnels(described: dict[str, Any]) -> str:
    ports = [f"127.0.0.1:{t['port']}->{t.get('node') or '?'}" for t in described.get("tunnels", [])]
    return ", ".join(ports) or "-"


@click.command()
@json_option
def connections(as_json: bool) -> None:
    """The kept logins: one per route, used by every later command and tunnel.

    Each is a background process holding one authenticated SSH connection, so a site with MFA asks
    for a code once (again only after the connection drops). It ends after the cluster's
    `persist` idle window (default 12h), on `hpcnb logout`, or when it cannot log in again.
    """
    from hpcnb.keeper.client import live_keepers
    from hpcnb.openssh.remote import own_masters

    found = live_keepers()
    masters = [str(m) for m in own_masters()]
    if as_json:
        print_json(found if not masters else [*found, *({"openssh_master": m} for m in masters)])
        return
    if not found and not masters:
        say("no kept connections")
        return
    rows = [[d["cluster"], d["route"], _since(d["since"]), duration(int(d["idle_s"])),
             _tunnels(d), d["pid"]] for d in found]
    rows += [["(openssh)", f"ControlMaster {m}", "-", "-", "-", "-"] for m in masters]
    print_table(rows, ["cluster", "login", "since", "idle", "tunnels", "pid"])


@click.command()
@cluster_option
@click.option("--all", "everything", is_flag=True, help="End every kept connection.")
def logout(cluster: str | None, everything: bool) -> None:
    """End the kept connection of a cluster (or every one with --all): the next command logs in
    again. Its tunnels close; jobs keep running."""
    from hpcnb.config import load_cluster
    from hpcnb.keeper.client import logout as end_keepers
    from hpcnb.keeper.client import route_key_of

    if everything and cluster:
        raise click.UsageError("--all and --cluster contradict each other: use one")
    from hpcnb.openssh.remote import OpenSSHRemote, end_master, own_masters

    cfg = None if everything else load_cluster(cluster)
    # A keeper holds paramiko logins only: an openssh cluster's logout ends its master alone.
    keepers = cfg is None or cfg.ssh_backend == "paramiko"
    ended = end_keepers(None if cfg is None else [route_key_of(cfg)]) if keepers else []
    for d in ended:
        say(f"logged out of {d['route']} (kept for {d['cluster']} since {_since(d['since'])})")
    if cfg is None:
        masters = [m for m in own_masters() if end_master(m)]
    else:
        masters = ([cfg.login_host] if cfg.ssh_backend == "openssh" and cfg.login_host
                   and OpenSSHRemote(cfg).logout() else [])
    for m in masters:
        say(f"ended hpcnb's OpenSSH master {m}")
    if not ended and not masters:
        say("no kept connection to end" if everything
            else f"no kept connection for {cluster or 'the default cluster'}")


COMMANDS = (connections, logout)
