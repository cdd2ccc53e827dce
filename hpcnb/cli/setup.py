"""`hpcnb doctor`, `hpcnb sites` and `hpcnb config ...`: the commands about setting hpcnb up.

The logic lives in hpcnb.doctor and hpcnb.sites; these parse flags and print.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hpcnb.cli.options import accept_key_option, cluster_option, complete_sites, json_option
from hpcnb.cli.output import UI, marks, print_json, print_table, say


@click.command()
@cluster_option
@json_option
@accept_key_option
@click.pass_context
def doctor(click_ctx: click.Context, cluster: str | None, as_json: bool, accept_new_host_key: bool) -> None:
    """Check that a cluster is ready: config, SSH, scheduler, partition, Jupyter.

    Exits 0 when every check passes, else with the code of the first failure (3 config, 4 SSH,
    5 host key, 6 on the cluster).
    """
    from hpcnb import doctor as doc
    from hpcnb.cluster import Cluster

    ok_mark, fail_mark = marks(sys.stdout)

    def show(check: Any) -> None:
        if as_json or (UI.quiet and check.ok):
            return
        mark = "-   " if check.skipped else (ok_mark if check.ok else fail_mark)
        click.echo(f"{mark} {check.name:<18} {check.detail}")
        if check.fix and not check.ok:
            click.echo(f"{'':<4} {'':<18} fix: {check.fix}")

    def connect(cfg: Any) -> Cluster:
        return Cluster(config=cfg, accept_new_host_key=accept_new_host_key, notify=say)

    checks = doc.run(cluster, connect, on_check=show)
    code = doc.exit_code(checks)
    if as_json:
        print_json({"cluster": cluster or _default_cluster_name(), "ok": code == 0,
                    "checks": [c.as_dict() for c in checks]})
    elif code == 0:
        say("all checks passed")
    click_ctx.exit(code)


def _default_cluster_name() -> str | None:
    from hpcnb.config import default_cluster_name
    from hpcnb.errors import HpcnbError

    try:
        return default_cluster_name()
    except HpcnbError:
        return None


@click.command()
@click.argument("name", required=False, shell_complete=complete_sites)
@json_option
def sites(name: str | None, as_json: bool) -> None:
    """The site configs shipped with hpcnb (use one with --cluster NAME or `config init --from`);
    with NAME, that site's profiles (what `--partition gpu` means there) and limits."""
    if name is not None:
        _site(name, as_json)
        return
    from hpcnb.sites import shipped_sites

    rows = shipped_sites()
    if as_json:
        print_json(rows)
        return
    print_table([[r["name"], r["scheduler"] or "", r["login_host"] or "-", r["description"] or "",
                  r["docs"] or ""] for r in rows],
                ["NAME", "SCHEDULER", "LOGIN HOST", "DESCRIPTION", "DOCS"])


def _site(name: str, as_json: bool) -> None:
    from hpcnb.sites import site_details

    site = site_details(name)
    if as_json:
        print_json(site)
        return
    click.echo(f"{site['name']}: {site['description'] or ''}".rstrip())
    for label, key in (("scheduler", "scheduler"), ("login host", "login_host"), ("docs", "docs"),
                       ("default profile", "default"), ("account example", "account_example"),
                       ("jupyter env", "jupyter_env")):
        if site[key]:
            click.echo(f"  {label + ':':<17} {site[key]}")
    click.echo(f"  {'account:':<17} {'required' if site['account_required'] else 'optional'}")
    for line in site["setup"]:
        click.echo(f"  {'setup:':<17} {line}")
    if site["profiles"]:
        click.echo("")
        print_table([[p["name"], p["summary"], p["description"] or ""] for p in site["profiles"]],
                    ["PROFILE", "RESOLVES TO", "DESCRIPTION"])
    click.echo("")
    print_table([[a["name"] + (" (default)" if a["name"] == site["app"] else ""), a["login"],
                  a["description"] or ""] for a in site["apps"]], ["APP (--app)", "LOGIN", "DESCRIPTION"])
    if site["unverified"]:
        click.echo("\nnot verified against the site's documentation (check before relying on it):")
        for item in site["unverified"]:
            click.echo(f"  - {item}")


@click.group()
def config() -> None:
    """Your hpcnb config file."""


@config.command(name="init")
@click.option("--cluster-name", metavar="NAME", help="Name of the cluster table [default: the site's "
              "name with --from, else mycluster].")
@click.option("--from", "site", metavar="SITE", shell_complete=complete_sites,
              help="Start from a shipped site config (see `hpcnb sites`).")
@click.option("--force", is_flag=True, help="Replace an existing config file (kept as .bak).")
def config_init(cluster_name: str | None, site: str | None, force: bool) -> None:
    """Write a commented starter config (mode 0600) to your config file's place."""
    from hpcnb.sites import init

    path, name = init(cluster_name, site, force)
    click.echo(str(path))
    say(f"wrote a starter config for cluster {name!r}; edit it, then run: hpcnb doctor --cluster {name}")


@config.command(name="path")
def config_path() -> None:
    """Print where your config file is (or would be)."""
    from hpcnb.paths import user_config_file

    click.echo(str(user_config_file()))


@click.group()
def jupyter() -> None:
    """The Jupyter your jobs start on the cluster."""


@jupyter.command(name="install")
@cluster_option
@click.option("--path", metavar="DIR", help="Where on the cluster [default: the site's recommended "
              "place (`hpcnb sites NAME`), else $HOME/.hpcnb/jupyter]; $VAR and ~ are expanded there.")
@click.option("--pip-option", "pip_options", multiple=True, metavar="OPTION",
              help="Passed to pip, e.g. --pip-option=--index-url=https://mirror/simple (repeatable).")
@accept_key_option
def jupyter_install(cluster: str | None, path: str | None, pip_options: tuple[str, ...],
                    accept_new_host_key: bool) -> None:
    """Make a Python env with JupyterLab on the cluster and use it for your jobs.

    Runs on the login host after the site's setup lines (module load python ...), installs
    JupyterLab there with pip, checks it the way `hpcnb doctor` does, and records the line that
    activates it in your config (`setup`), so the next `hpcnb submit` uses it.
    """
    from hpcnb import jupyter_env
    from hpcnb.cluster import Cluster
    from hpcnb.sites import record_setup

    with Cluster(cluster, accept_new_host_key=accept_new_host_key, notify=say) as target:
        where = jupyter_env.check_path(path or target.cfg.jupyter_env or jupyter_env.DEFAULT_ENV,
                                       target.cfg.account)
        jupyter_env.check_pip_options(pip_options)  # a bad value is refused before anything runs
        say(f"installing JupyterLab into {where} on {target.name} (pip; this takes a few minutes)")
        installed = jupyter_env.install(target, path, pip_options)
        setup = jupyter_env.setup_with(target, installed)
    config_file = record_setup(target.name, setup)
    click.echo(installed.path)
    say(f"JupyterLab {installed.jupyterlab} with Python {installed.python}; recorded in {config_file}:\n"
        f"  [clusters.{target.name}] setup = {setup}")


COMMANDS = (doctor, sites, config, jupyter)
