"""Site profiles: what `--partition gpu` means at one site, and the limits checked before a submit.

A site config declares named profiles (`[profiles.gpu]` ...), each mapping a name users type to
that site's recipe: the partition / QOS / queue, a node constraint, an account rule (NERSC's GPU
projects end in `_g`), cores and memory per GPU, defaults, and limits (walltime, GPUs, cores,
flags the site refuses). A user config may add profiles or override keys of a site's profile.
A `--partition` that names no profile is passed through as the partition, as before.

Pure: tables in, frozen Profile out (docs/site-configs.md describes every key).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpcnb.names import NAME_RE, NAME_RULE, checked_tables

REFUSABLE = ("mem", "cpus", "gpus", "account")
_SUFFIX_RE = re.compile(r"^[A-Za-z0-9._-]{1,16}\Z")
_CONSTRAINT_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")
_RESOURCE_KEY_RE = re.compile(r"^[a-z_][a-z0-9_]{0,31}\Z")
# `{account}` stands for the job's account (NCI: -l storage=gdata/{account}+scratch/{account}).
_RESOURCE_VALUE_RE = re.compile(r"^(?:[A-Za-z0-9._:/+-]|\{account\}){1,200}\Z")
_MEM_RE = re.compile(r"^\d{1,9}[KMGT]\Z")


@dataclass(frozen=True)
class Profile:
    """One named recipe of a site. Every field is optional; None means "the site's default"."""

    name: str
    description: str | None = None
    partition: str | None = None  # partition / QOS / queue, sent with the site's partition_flag
    qos: str | None = None  # Slurm: a --qos beside --partition
    constraint: str | None = None  # Slurm: --constraint (node features)
    account_suffix: str | None = None  # appended to the account (NERSC: GPU projects end in _g)
    gpus: int | None = None  # GPUs when --gpus is not given
    max_gpus: int = 0  # 0: a CPU profile, --gpus refused
    cpus: int | None = None
    cpus_per_gpu: int | None = None
    mem: str | None = None  # e.g. "8G"
    mem_per_gpu: str | None = None
    max_cpus: int | None = None
    max_hours: float | None = None
    min_hours: float | None = None  # ARCHER2's long QoS: at least 24 h
    whole_node: bool = False
    ntasks: bool = True  # Slurm: send --ntasks=1 (ARCHER2's GPU nodes reject any --ntasks)
    refuse: tuple[str, ...] = ()  # flags the site refuses here: mem, cpus, gpus, account
    resources: tuple[tuple[str, str], ...] = ()  # PBS: extra -l resources (jobfs=10GB)
    directives: tuple[str, ...] = ()  # extra plain directives
    setup: tuple[str, ...] | None = None  # this profile's setup lines, instead of the site's
    gpu_type: str | None = None  # GPUs asked for by model: --gpus=a100:N (Alliance, PSC)
    docs: str | None = None

    @property
    def has_gpus(self) -> bool:
        return self.max_gpus > 0


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "a string"


def _name(value: Any) -> str | None:
    return None if isinstance(value, str) and NAME_RE.match(value) else NAME_RULE


def _pattern(regex: re.Pattern[str], rule: str) -> Any:
    return lambda value: None if isinstance(value, str) and regex.match(value) else rule


def _count(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100_000
    return None if ok else "a whole number 0..100000"


def _hours(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return None if ok and value > 0 else "a number of hours > 0"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _refuse(value: Any) -> str | None:
    ok = isinstance(value, list) and all(v in REFUSABLE for v in value)
    return None if ok else f"a list of: {', '.join(REFUSABLE)}"


def check_resources(value: Any) -> str | None:
    """A table of PBS resources (-l key=value): None when it is one, else what it must be."""
    ok = isinstance(value, dict) and all(
        isinstance(k, str) and _RESOURCE_KEY_RE.match(k) and isinstance(v, str)
        and _RESOURCE_VALUE_RE.match(v) for k, v in value.items())
    return None if ok else "a table of resource = \"value\" (letters, digits, ._:/+-, {account})"


def _strings(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return None if ok else "a list of strings"


MEM_RULE = "a size like 8G or 500M"
_CHECKS = {
    "description": _text, "partition": _name, "qos": _name,
    "constraint": _pattern(_CONSTRAINT_RE, "letters, digits, . _ - (one node feature)"),
    "account_suffix": _pattern(_SUFFIX_RE, "1-16 letters, digits, . _ -"),
    "gpus": _count, "max_gpus": _count, "cpus": _count, "cpus_per_gpu": _count,
    "mem": _pattern(_MEM_RE, MEM_RULE), "mem_per_gpu": _pattern(_MEM_RE, MEM_RULE),
    "max_cpus": _count, "max_hours": _hours, "min_hours": _hours, "whole_node": _flag,
    "ntasks": _flag,
    "refuse": _refuse,
    "resources": check_resources, "directives": _strings, "docs": _text, "setup": _strings,
    "gpu_type": _pattern(_SUFFIX_RE, "a GPU model: 1-16 letters, digits, . _ -"),
}  # fmt: skip


def check_tables(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    """`profiles` of a config file -> {name: checked values}; ConfigError naming file and key."""
    return checked_tables(raw, where, "profiles", "profile", _CHECKS)


def merge(base: Mapping[str, dict[str, Any]], over: Mapping[str, dict[str, Any]]
          ) -> dict[str, dict[str, Any]]:
    """A user's tables over a site's (profiles, apps): new names are added, known ones changed key
    by key."""
    merged = {name: dict(values) for name, values in base.items()}
    for name, values in over.items():
        merged.setdefault(name, {}).update(values)
    return merged


def build(tables: Mapping[str, dict[str, Any]]) -> tuple[Profile, ...]:
    """Checked tables -> Profiles, by name."""
    profiles = []
    for name in sorted(tables):
        values = dict(tables[name])
        for key in ("refuse", "directives", "setup"):
            if key in values:
                values[key] = tuple(values[key])
        if "resources" in values:
            values["resources"] = tuple(sorted(values["resources"].items()))
        for key in ("max_hours", "min_hours"):
            if key in values:
                values[key] = float(values[key])
        profiles.append(Profile(name=name, **values))
    return tuple(profiles)


def summary(profile: Profile) -> str:
    """What a profile resolves to, in one line: for `--dry-run` and `hpcnb sites NAME`."""
    parts = [f"partition {profile.partition}" if profile.partition else "the default partition"]
    for label, value in (("qos", profile.qos), ("constraint", profile.constraint),
                         ("account suffix", profile.account_suffix)):
        if value:
            parts.append(f"{label} {value}")
    if "gpus" in profile.refuse:
        parts.append("GPUs come with the node (no --gpus)")
    elif profile.has_gpus:
        parts.append(f"{profile.gpus or 1}-{profile.max_gpus} GPUs")
    if profile.cpus_per_gpu:
        parts.append(f"{profile.cpus_per_gpu} cores per GPU")
    if profile.min_hours:
        parts.append(f"at least {profile.min_hours:g} h")
    if profile.max_hours:
        parts.append(f"at most {profile.max_hours:g} h")
    if profile.whole_node:
        parts.append("whole nodes")
    if profile.refuse:
        parts.append("refuses " + ", ".join(f"--{f}" for f in profile.refuse))
    return ", ".join(parts)


def job_resources(site: tuple[tuple[str, str], ...], profile: Profile | None, account: str | None
                  ) -> tuple[tuple[str, str], ...]:
    """The site's resources with the profile's over them; `{account}` filled in (a resource that
    needs an account is left out when the job has none: the site's default project applies)."""
    merged = dict(site)
    merged.update(profile.resources if profile else ())
    return tuple((key, value.replace("{account}", account or "")) for key, value in sorted(merged.items())
                 if account or "{account}" not in value)
