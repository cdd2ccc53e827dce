"""Cluster configuration: shipped site configs + the user's config file -> frozen ClusterConfig.

Two sources:
  * site configs shipped with hpcnb: ``site-configs/NAME.toml``, ONE cluster per file, its keys at
    the top level, the cluster's name is the file stem;
  * the user's config file (see paths.user_config_file()): top-level ``default_cluster = "x"`` and
    ``[clusters.NAME]`` tables. A table may say ``extends = "perlmutter"`` to start from a shipped
    site config and override keys (``user``, ``account`` ...). A table named like a shipped site
    config without ``extends`` extends that site config implicitly.

Paths (identity_file, known_hosts, template_dir) expand ``~``; relative ones are relative to the
folder of the file that set them. notebook_dir is a path on the cluster and is left alone.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcnb import apps as app_tables
from hpcnb import paths
from hpcnb import profiles as profile_tables
from hpcnb.apps import App
from hpcnb.errors import ConfigError
from hpcnb.keeper import persist
from hpcnb.names import NAME_RE, NAME_RULE, named_tables
from hpcnb.profiles import Profile
from hpcnb.schedulers import SCHEDULERS as SCHEDULER_CLASSES
from hpcnb.script_values import check_script_values

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SCHEDULERS = tuple(SCHEDULER_CLASSES)  # hpcnb/schedulers/__init__.py: slurm, pbs, local, lsf
TUNNELS = ("direct", "node-ssh", "socket")
JUPYTERS = ("lab", "notebook")
PBS_RESOURCES = ("select", "flat")
PBS_FLAVOURS = ("pro", "torque")
# Which directive carries --partition / --account / --gpus: one of the scheduler's own choices.
FLAG_KEYS = {"partition_flag": "partition_flags", "account_flag": "account_flags", "gpu_flag": "gpu_flags"}

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})\Z")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}\Z")


@dataclass(frozen=True)
class ClusterConfig:
    """One cluster, fully resolved. See the module docstring for where values come from."""

    name: str
    scheduler: str
    source: str
    login_host: str | None = None
    user: str | None = None
    port: int | None = None  # None: ~/.ssh/config's Port, else 22
    identity_file: str | None = None
    known_hosts: str | None = None
    tunnel: str = "direct"
    partition: str | None = None
    account: str | None = None
    setup: tuple[str, ...] = ()
    jupyter: str = "lab"
    notebook_dir: str | None = None
    extra_directives: tuple[str, ...] = ()
    template_dir: str | None = None
    start_timeout: int = 300
    walltime_warning: int = 600
    max_hours: float | None = None
    description: str | None = None
    docs: str | None = None
    # Additions to the shared contract:
    extends: str | None = None  # the shipped site config this one started from
    python: str = "python3"  # interpreter for the launcher on the node (after setup lines)
    account_required: bool = False  # refuse to submit without an account (e.g. NERSC)
    partition_flag: str | None = None  # one of the scheduler's partition_flags (slurm: --partition|--qos)
    account_flag: str | None = None  # one of its account_flags (pbs: -A|-P, NCI Gadi)
    gpu_flag: str | None = None  # slurm: --gpus|--gres|--gpus-per-node ; pbs: ngpus|naccelerators
    pbs_resources: str = "select"  # pbs: "select" (-l select=1:ncpus=..) | "flat" (-l ncpus=..)
    pbs_flavour: str = "pro"  # pbs: "pro" (PBS Pro, OpenPBS) | "torque" (-l nodes=1:ppn=N)
    # Site profiles (hpcnb.profiles) and what the site file says about itself:
    profiles: tuple[Profile, ...] = ()
    resources: tuple[tuple[str, str], ...] = ()  # pbs: -l resources every job gets (ALCF filesystems)
    account_example: str | None = None  # what an account looks like at this site
    jupyter_env: str | None = None  # where `hpcnb jupyter install` puts its env (on the cluster)
    unverified: tuple[str, ...] = ()  # what the site file could not confirm from the site's docs
    persist: float | None = 12 * 3600.0  # a keeper's idle window in seconds; None: no keeper
    ssh_backend: str = "paramiko"  # or "openssh": the system ssh does every login (hpcnb.openssh)
    ports: tuple[int, ...] = ()  # the node's other ports forwarded beside the notebook (8787, 6006)
    notify: bool = True  # desktop notifications: a queued notebook ready, the walltime warning
    app: str = "jupyter"  # what a job starts unless --app says otherwise (hpcnb.apps)
    node_access: str = "ssh"  # how `hpcnb ssh` reaches a job's node: "ssh", or "scheduler" (srun --overlap)
    apps: tuple[App, ...] = app_tables.BUILT_IN_APPS  # the recipes: built-in, the site's, the user's

    @property
    def machine(self) -> str:
        """The machine: the shipped site config this cluster extends, else its own name. It names
        the session folders on the cluster, so two laptops with different names for one site
        (both extending it) find the same sessions."""
        return self.extends or self.name

    def profile(self, name: str | None) -> Profile | None:
        """The profile called `name`; None when it names none (a plain partition)."""
        return next((p for p in self.profiles if p.name == name), None)


# ---------------------------------------------------------------- per-key checks


def _check_str(value: Any) -> str | None:
    if not isinstance(value, str):
        return "a string"
    if "\x00" in value:
        return "a string without NUL bytes"
    return None


def _check_int(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"


def _check_number(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if ok and math.isfinite(value) else "a number"


def _check_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _check_strlist(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "a list of strings"
    return None


_KIND: dict[str, Callable[[Any], str | None]] = {
    "str": _check_str,
    "int": _check_int,
    "number": _check_number,
    "bool": _check_bool,
    "strlist": _check_strlist,
    "table": lambda value: None,  # profiles: checked by hpcnb.profiles
    "apps": lambda value: None,  # checked by hpcnb.apps
    "resources": profile_tables.check_resources,
    "persist": lambda value: None if isinstance(value, (str, bool)) else 'a duration such as "12h", or "no"',
    "ports": lambda v: None if isinstance(v, list) and all(
        isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in v) else "a list of ports",
}

# key -> kind. "name" and "source" are not settable: they come from where the table is.
_KEYS: dict[str, str] = {
    "scheduler": "str", "login_host": "str", "user": "str", "port": "int",
    "identity_file": "str", "known_hosts": "str", "tunnel": "str", "partition": "str",
    "account": "str", "setup": "strlist", "jupyter": "str", "notebook_dir": "str",
    "extra_directives": "strlist", "template_dir": "str", "start_timeout": "int",
    "walltime_warning": "int", "max_hours": "number", "description": "str", "docs": "str",
    "python": "str", "account_required": "bool", "partition_flag": "str",
    "account_flag": "str", "gpu_flag": "str", "pbs_resources": "str", "pbs_flavour": "str",
    "account_example": "str", "jupyter_env": "str", "unverified": "strlist", "profiles": "table",
    "resources": "resources", "persist": "persist", "ssh_backend": "str",
    "ports": "ports", "notify": "bool", "app": "str", "apps": "apps", "node_access": "str",
}  # fmt: skip
_PATH_KEYS = ("identity_file", "known_hosts", "template_dir")
_USER_TOP_KEYS = ("default_cluster", "clusters")


def _suggest(key: str, valid: list[str] | tuple[str, ...]) -> str:
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _where(file: Path, table: str | None) -> str:
    return f"{file}" + (f" [{table}]" if table else "")


def _check_table(
    raw: Mapping[str, Any], file: Path, table: str | None, *, allow: tuple[str, ...]
) -> dict[str, Any]:
    """Check keys and types of one cluster table; resolve its paths. Returns a plain dict."""
    out: dict[str, Any] = {}
    valid = [*_KEYS, *allow]
    for key, value in raw.items():
        if key not in valid:
            raise ConfigError(f"{_where(file, table)}: unknown key {key!r}{_suggest(key, valid)}")
        kind = "str" if key in allow else _KEYS[key]
        problem = _KIND[kind](value)
        if problem:
            raise ConfigError(
                f"{_where(file, table)}: key {key!r} must be {problem}, got {type(value).__name__} {value!r}"
            )
        if key in _PATH_KEYS:
            p = Path(value).expanduser()
            value = str(p if p.is_absolute() else (file.parent / p).resolve())
        if kind == "table":
            value = profile_tables.check_tables(value, _where(file, table))
        if kind == "apps":
            value = app_tables.check_tables(value, _where(file, table))
        out[key] = tuple(value) if kind == "strlist" else value
    return out


def _one_of(value: str, choices: tuple[str, ...], key: str, where: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where}: {key} = {value!r} is not one of {', '.join(choices)}")


def _finish(name: str, values: dict[str, Any], where: str, source: str) -> ClusterConfig:
    """Cross-key validation and defaults that depend on the scheduler."""
    if "scheduler" not in values:
        raise ConfigError(f"{where}: cluster {name!r} needs scheduler = "
                          + " | ".join(f'"{s}"' for s in SCHEDULERS))
    sched = values["scheduler"]
    _one_of(sched, SCHEDULERS, "scheduler", where)
    _one_of(values.get("tunnel", "direct"), TUNNELS, "tunnel", where)
    _one_of(values.get("jupyter", "lab"), JUPYTERS, "jupyter", where)
    _one_of(values.get("pbs_resources", "select"), PBS_RESOURCES, "pbs_resources", where)
    _one_of(values.get("pbs_flavour", "pro"), PBS_FLAVOURS, "pbs_flavour", where)
    if values.get("pbs_flavour") == "torque" and values.get("account_flag") == "-P":
        # qsub(1) in Torque: -P is the user the job runs as (proxy user), not a project.
        raise ConfigError(f"{where}: account_flag = \"-P\" means a proxy user in Torque, not a "
                          "project: use -A")
    host = values.get("login_host")
    if sched != "local" and not host:
        raise ConfigError(f"{where}: cluster {name!r} (scheduler {sched}) needs login_host")
    if host is not None and not _HOST_RE.match(host):
        raise ConfigError(f"{where}: login_host {host!r} is not a host name (letters, digits, . -)")
    user = values.get("user")
    if user is not None and not _USER_RE.match(user):
        raise ConfigError(f"{where}: user {user!r} is not a valid user name")
    port = values.get("port")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"{where}: port {port!r} is not in 1..65535")
    if not 1 <= values.get("start_timeout", 300) <= 86400:
        raise ConfigError(f"{where}: start_timeout must be 1..86400 seconds")
    if values.get("walltime_warning", 600) < 0:
        raise ConfigError(f"{where}: walltime_warning must be >= 0 seconds")
    max_hours = values.get("max_hours")
    if max_hours is not None and max_hours <= 0:
        raise ConfigError(f"{where}: max_hours must be > 0, got {max_hours!r}")
    for key in ("partition", "account"):
        v = values.get(key)
        if v is not None and not NAME_RE.match(v):
            raise ConfigError(f"{where}: {key} {v!r} must be {NAME_RULE}")
    values["profiles"] = profile_tables.build(values.get("profiles", {}))
    values["apps"] = app_tables.build(values.get("apps", {}), where)
    app_tables.pick(values["apps"], values.get("app", "jupyter"), values.get("tunnel", "direct"), where)
    values["resources"] = tuple(sorted(values.get("resources", {}).items()))
    values["persist"] = persist.parse(values.get("persist", persist.DEFAULT), where)
    values["ports"] = tuple(dict.fromkeys(values.get("ports", ())))
    _one_of(values.setdefault("ssh_backend", "paramiko"), ("paramiko", "openssh"), "ssh_backend", where)
    _one_of(values.get("node_access", "ssh"), ("ssh", "scheduler"), "node_access", where)
    check_script_values(values, where)
    for key, attribute in FLAG_KEYS.items():
        choices: tuple[str, ...] = getattr(SCHEDULER_CLASSES[sched], attribute)
        if not choices:  # the local backend has no directives
            values[key] = None
            continue
        values.setdefault(key, choices[0])
        _one_of(values[key], choices, key, where)
    return ClusterConfig(name=name, source=source, **values)


# ---------------------------------------------------------------- files


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with open(file, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: TOML syntax error: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {file}: {e}") from None




@dataclass(frozen=True)
class _UserConfig:
    file: Path
    default_cluster: str | None
    clusters: dict[str, dict[str, Any]]


def _load_user() -> _UserConfig:
    file = paths.user_config_file()
    if not file.exists():
        if os.environ.get("HPCNB_CONFIG"):
            raise ConfigError(f"config file {file} (named by HPCNB_CONFIG) does not exist")
        return _UserConfig(file, None, {})
    raw = _read_toml(file)
    for key in raw:
        if key not in _USER_TOP_KEYS:
            raise ConfigError(f"{file}: unknown top-level key {key!r}{_suggest(key, _USER_TOP_KEYS)}")
    default = raw.get("default_cluster")
    if default is not None and not isinstance(default, str):
        raise ConfigError(f"{file}: key 'default_cluster' must be a string, got {default!r}")
    checked: dict[str, dict[str, Any]] = {}
    for name, table in named_tables(raw.get("clusters", {}), str(file), "clusters", "cluster"):
        checked[name] = _check_table(table, file, f"clusters.{name}", allow=("extends",))
    return _UserConfig(file, default, checked)


def _site_cluster(name: str, file: Path) -> dict[str, Any]:
    return _check_table(_read_toml(file), file, None, allow=())


def _build(name: str, user: _UserConfig, sites: dict[str, Path]) -> ClusterConfig:
    if name in user.clusters:
        table = dict(user.clusters[name])
        where = _where(user.file, f"clusters.{name}")
        base_name = table.pop("extends", None)
        if base_name is None and name in sites:
            base_name = name  # [clusters.perlmutter] refines the shipped perlmutter
        values: dict[str, Any] = {}
        if base_name is not None:
            if base_name not in sites:
                raise ConfigError(
                    f"{where}: extends {base_name!r}, which is not a shipped site config "
                    f"(known: {', '.join(sorted(sites)) or 'none'})"
                )
            values = _site_cluster(base_name, sites[base_name])
        if "profiles" in table:  # a user's profiles add to the site's, key by key
            table["profiles"] = profile_tables.merge(values.get("profiles", {}), table["profiles"])
        if "apps" in table:  # and their apps too
            table["apps"] = profile_tables.merge(values.get("apps", {}), table["apps"])
        values.update(table)
        values["extends"] = base_name
        return _finish(name, values, where, str(user.file))
    if name in sites:
        return _finish(name, _site_cluster(name, sites[name]), str(sites[name]), str(sites[name]))
    known = sorted({*sites, *user.clusters})
    raise ConfigError(
        f"unknown cluster {name!r}{_suggest(name, known).replace('valid keys', 'known clusters')}",
        hint=f"clusters come from {paths.site_config_dir()} and {user.file}",
    )


def load_cluster(name: str | None = None) -> ClusterConfig:
    """The cluster called NAME; None -> $HPCNB_CLUSTER -> the user's default_cluster -> "local"."""
    user = _load_user()
    sites = paths.site_config_files()
    chosen = name or os.environ.get("HPCNB_CLUSTER") or user.default_cluster or "local"
    return _build(chosen, user, sites)


def list_clusters() -> list[ClusterConfig]:
    """Every known cluster (shipped and user-defined, user refinements applied), by name."""
    user = _load_user()
    sites = paths.site_config_files()
    return [_build(n, user, sites) for n in sorted({*sites, *user.clusters})]


def default_cluster_name() -> str:
    """The name load_cluster(None) would pick."""
    return os.environ.get("HPCNB_CLUSTER") or _load_user().default_cluster or "local"


