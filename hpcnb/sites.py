"""The shipped site configs as a list (`hpcnb sites`), and a starter user config (`hpcnb config init`).

The site list reads the shipped TOML files themselves, so a broken user config does not hide them.
`config init` never overwrites without --force, writes with mode 0600 (the file names hosts, users
and key paths), creates a missing parent folder with mode 0700, and checks that what it wrote loads.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from hpcnb import paths
from hpcnb.errors import ConfigError, UsageError
from hpcnb.names import NAME_RE, NAME_RULE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def shipped_sites() -> list[dict[str, Any]]:
    """name, scheduler, login_host, description, docs of every shipped site config, by name."""
    rows = []
    for file in paths.site_config_files().values():
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"shipped site config {file} cannot be read: {exc}") from exc
        rows.append({
            "name": file.stem, "scheduler": data.get("scheduler"), "login_host": data.get("login_host"),
            "description": data.get("description"), "docs": data.get("docs"), "file": str(file),
        })
    return rows


def site_details(name: str) -> dict[str, Any]:
    """One cluster as hpcnb will use it (the shipped site file with your config's changes): its
    profiles with their limits, the account rule, setup, and what its file could not verify."""
    from hpcnb.config import load_cluster
    from hpcnb.profiles import summary

    cfg = load_cluster(name)
    return {
        "name": cfg.name, "scheduler": cfg.scheduler, "login_host": cfg.login_host,
        "description": cfg.description, "docs": cfg.docs, "source": cfg.source,
        "default": cfg.partition, "max_hours": cfg.max_hours,
        "account_required": cfg.account_required, "account_example": cfg.account_example,
        "setup": list(cfg.setup), "jupyter_env": cfg.jupyter_env, "unverified": list(cfg.unverified),
        "profiles": [{"name": p.name, "description": p.description, "partition": p.partition,
                      "qos": p.qos, "constraint": p.constraint, "account_suffix": p.account_suffix,
                      "max_gpus": p.max_gpus, "max_hours": p.max_hours or cfg.max_hours,
                      "refuse": list(p.refuse), "docs": p.docs, "summary": summary(p)}
                     for p in cfg.profiles],
        "app": cfg.app,
        "apps": [{"name": a.name, "description": a.description, "login": a.login,
                  "socket": a.is_jupyter or bool(a.socket_command), "docs": a.docs} for a in cfg.apps],
    }


def _q(value: str) -> str:
    """A TOML basic string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_HEADER = """\
# hpcnb configuration (written by `hpcnb config init`).
# Reference: README.md "Quick start on a real cluster"; `hpcnb sites` lists the shipped site
# configs; `hpcnb doctor` checks a cluster end to end (SSH, scheduler, partition, Jupyter).
# An unknown key or a wrong type is an error that names this file and the key.
"""


def starter_config(cluster: str, site: dict[str, Any] | None) -> str:
    """The text of a starter config for one cluster, optionally extending a shipped site config."""
    key = cluster if re.fullmatch(r"[A-Za-z0-9_-]+", cluster) else _q(cluster)
    lines = [_HEADER, f"default_cluster = {_q(cluster)}", "", f"[clusters.{key}]"]
    if site is not None:
        lines += [
            f"extends = {_q(site['name'])}   # {site.get('description') or ''}".rstrip(),
            f"# docs: {site.get('docs') or '-'}",
            "# Keys below override the site config; `hpcnb doctor` tells you what is still missing.",
            '# user = "alice"                     # your user name on the cluster (else ~/.ssh/config',
            "#                                    # or this machine's user name)",
            '# account = "proj123"                # the allocation/project jobs are charged to',
            '# partition = "debug"                # default --partition / queue',
            '# identity_file = "~/.ssh/id_ed25519"',
            '# setup = ["module load python", "source ~/envs/jupyter/bin/activate"]',
        ]
    else:
        lines += [
            'scheduler = "slurm"                  # slurm | pbs | lsf | sge | local',
            'login_host = "login.hpc.example.edu" # CHANGE ME: the login node you ssh to',
            '# user = "alice"                     # your user name there (default: this machine\'s)',
            '# port = 22',
            '# identity_file = "~/.ssh/id_ed25519"',
            '# known_hosts = "~/.ssh/known_hosts" # host keys are always checked',
            'tunnel = "direct"                    # direct | node-ssh | socket',
            '# partition = "debug"                # default --partition (Slurm) / queue (PBS)',
            '# account = "proj123"                # default --account',
            "# Shell lines run before Jupyter starts (on the compute node), one per entry:",
            '# setup = ["module load python/3.11", "source ~/envs/jupyter/bin/activate"]',
            "# start_timeout = 300                # seconds for Jupyter to answer once the job runs",
            "# walltime_warning = 600             # warn this long before the time limit",
        ]
    return "\n".join(lines) + "\n"


def write_config(text: str, target: Path, force: bool) -> None:
    """Write text to target with mode 0600: refuses to replace an existing file unless force."""
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; not overwriting it",
                         hint="add --force to replace it (the old file is kept as .bak)")
    paths.make_private_dirs(target.parent)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        if os.name == "posix":
            tmp.chmod(0o600)
        if target.exists():
            target.replace(target.with_name(target.name + ".bak"))
        tmp.replace(target)
    finally:
        if tmp.exists():
            tmp.unlink()


def init(cluster: str | None, site_name: str | None, force: bool) -> tuple[Path, str]:
    """Write the starter config; returns (path, cluster name). Checks it loads."""
    from hpcnb.config import load_cluster

    site = None
    if site_name is not None:
        sites = {s["name"]: s for s in shipped_sites()}
        if site_name not in sites:
            raise UsageError(f"--from {site_name!r} is not a shipped site config",
                             hint=f"one of: {', '.join(sorted(sites))} (see `hpcnb sites`)")
        site = sites[site_name]
    name = cluster or site_name or "mycluster"
    if not NAME_RE.match(name):
        raise UsageError(f"--cluster-name {name!r} must be {NAME_RULE}")
    target = paths.user_config_file()
    write_config(starter_config(name, site), target, force)
    load_cluster(name)  # what we wrote must load (a ConfigError here is a bug worth seeing)
    return target, name


def _setup_assignment(setup: list[str]) -> str:
    return "setup = [" + ", ".join(_q(line) for line in setup) + "]  # written by `hpcnb jupyter install`"


def record_setup(cluster: str, setup: list[str]) -> Path:
    """Set `setup` of [clusters.CLUSTER] in the user's config file (made if missing; the old file
    kept as .bak). A shipped site's name gets a table that refines it. The result must load with
    exactly these lines, else nothing is written and the error says what to add by hand."""
    from hpcnb.config import load_cluster

    target = paths.user_config_file()
    text = target.read_text(encoding="utf-8") if target.exists() else _HEADER
    key = cluster if re.fullmatch(r"[A-Za-z0-9_-]+", cluster) else _q(cluster)
    header = re.compile(rf'^\[\s*clusters\.(?:{re.escape(cluster)}|"{re.escape(cluster)}")\s*\]\s*$', re.M)
    found = header.search(text)
    if found is None:
        new = text.rstrip("\n") + f"\n\n[clusters.{key}]\n{_setup_assignment(setup)}\n"
    else:
        end_match = re.compile(r"^\s*\[", re.M).search(text, found.end())
        end = end_match.start() if end_match else len(text)
        body = re.sub(r"^\s*setup\s*=\s*\[.*?\]\s*(#[^\n]*)?(\n|\Z)", "", text[found.end():end],
                      count=1, flags=re.M | re.S)
        new = text[:found.end()] + "\n" + _setup_assignment(setup) + body.rstrip("\n") + "\n" + \
            ("\n" + text[end:] if end < len(text) else "")
    try:
        parsed = tomllib.loads(new)["clusters"][cluster]["setup"]
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        parsed = exc
    if parsed != setup:
        raise ConfigError(f"could not update {target} by itself",
                          hint=f"under [clusters.{key}] set: {_setup_assignment(setup)}")
    write_config(new, target, force=True)
    load_cluster(cluster)  # what we wrote must load
    return target
