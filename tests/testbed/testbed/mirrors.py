"""Site mirrors: what a real site's scheduler has (partitions, QOS, node features, GPU gres, PBS
queues and custom resources, submit rules), as DATA written from the centre's own documentation
(tests/testbed/mirrors/<site>.toml, every fact with the URL it comes from), so that hpcnb's rendered
job scripts for that site can be put to a real scheduler configured like it
(tests/cluster/test_site_mirrors.py; mirror_slurm.py and mirror_pbs.py build the schedulers).

The descriptions are NOT derived from the site configs under test (site-configs/*.toml): they are
written from the docs, and where a doc could not be read the fact says so (`unverified`). Node
counts are fake (one node per type); a node's cores, memory and GPUs are the documented ones where
the docs give them, because they decide whether a request fits.

This module is the data model and its one reading of the files; nothing here runs a daemon.
"""

from __future__ import annotations

import fcntl
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .topology import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MIRRORS = Path(__file__).resolve().parent.parent / "mirrors"
LOCK = ROOT / "mirrors.lock"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)\Z")
# What a submit rule may refuse or require (mirror_slurm.py / mirror_pbs.py give each its meaning).
REJECTABLE = ("mem", "ntasks", "cpus_per_task", "gpus_per_task")
REQUIRABLE = ("account", "gpus", "exclusive", "mem")


class MirrorError(ValueError):
    """A mirror description that does not say what it must (file, table, key in the message)."""


@dataclass(frozen=True)
class NodeType:
    name: str
    cpus: int
    memory_mb: int
    features: tuple[str, ...] = ()
    gres: str = ""  # slurm.conf Gres=, e.g. "gpu:a100:4"
    source: str = ""
    unverified: str = ""


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple[str, ...]
    max_time: str | None = None  # D-HH:MM:SS; None: UNLIMITED (the docs give none)
    default: bool = False
    exclusive: bool = False
    allow_accounts: tuple[str, ...] = ()
    allow_qos: tuple[str, ...] = ()
    qos: str | None = None  # a partition QOS (its limits apply to every job in the partition)
    def_mem_per_cpu: int | None = None  # MB a core gets when the job names no memory
    source: str = ""
    unverified: str = ""


@dataclass(frozen=True)
class Qos:
    name: str
    max_time: str | None = None
    max_tres_per_job: str = ""  # sacctmgr MaxTRESPerJob, e.g. "gres/gpu=2"
    max_tres_per_user: str = ""
    flags: tuple[str, ...] = ()  # besides DenyOnLimit, which every mirror QOS has
    source: str = ""
    unverified: str = ""


@dataclass(frozen=True)
class Queue:
    """A PBS execution queue."""

    name: str
    max_walltime: str | None = None
    resources_max: tuple[tuple[str, str], ...] = ()  # e.g. (("ncpus", "3200"),)
    source: str = ""
    unverified: str = ""


@dataclass(frozen=True)
class Resource:
    """A PBS custom resource (qmgr `create resource NAME type=T[, flag=F]`)."""

    name: str
    type: str  # long, size, string, ...
    flag: str = ""  # "", "h", "nh", "q", ...
    source: str = ""


@dataclass(frozen=True)
class Rule:
    """A site's submit-time rule (Slurm: job_submit.lua; PBS: a queuejob hook). Scope: the
    partition / qos / queues named (all jobs when none is)."""

    message: str
    source: str
    partition: str | None = None
    qos: str | None = None
    queues: tuple[str, ...] = ()
    reject: tuple[str, ...] = ()
    require: tuple[str, ...] = ()
    require_resources: tuple[str, ...] = ()  # PBS -l resources that must be given
    min_time: str | None = None
    values: tuple[tuple[str, tuple[str, ...]], ...] = ()  # PBS: resource -> allowed ':' parts
    ncpus_per_gpu: int | None = None  # PBS: ncpus must be this x ngpus
    unverified: str = ""


@dataclass(frozen=True)
class Mirror:
    site: str
    scheduler: str
    docs: tuple[str, ...]
    account: str | None  # what the test user gives hpcnb as --account (None: nothing)
    accounts: tuple[str, ...] = ()  # Slurm: the user's accounts in slurmdbd; first = default
    qos_access: tuple[str, ...] = ()  # Slurm: the QOS the user may use (empty: the cluster's)
    default_qos: str | None = None
    nodes: tuple[NodeType, ...] = ()
    partitions: tuple[Partition, ...] = ()
    qos: tuple[Qos, ...] = ()
    queues: tuple[Queue, ...] = ()
    resources: tuple[Resource, ...] = ()
    rules: tuple[Rule, ...] = ()
    not_checked: tuple[str, ...] = ()  # what this mirror cannot check
    unverified: tuple[str, ...] = ()
    path: Path = field(default=Path(), compare=False)

    def partition(self, name: str | None) -> Partition | None:
        """The named partition, or the default one for None; None when there is no such one."""
        for part in self.partitions:
            if (name is None and part.default) or part.name == name:
                return part
        return None

    def qos_named(self, name: str | None) -> Qos | None:
        return next((q for q in self.qos if q.name == name), None)

    def queue(self, name: str | None) -> Queue | None:
        return next((q for q in self.queues if q.name == name), None)

    def slurm_limit(self, partition: str | None, qos: str | None) -> int | None:
        """Seconds a job in (partition, qos) may ask for here: the smallest of the partition's
        MaxTime, its partition QOS (unless the job's QOS has OverPartQOS) and the job's QOS."""
        part = self.partition(partition)
        job_qos = self.qos_named(qos or self.default_qos)
        limits = [part.max_time if part else None, job_qos.max_time if job_qos else None]
        part_qos = self.qos_named(part.qos) if part and part.qos else None
        if part_qos and not (job_qos and "OverPartQOS" in job_qos.flags):
            limits.append(part_qos.max_time)
        known = [seconds(t) for t in limits if t]
        return min(known) if known else None

    def pbs_limit(self, queue: str | None) -> int | None:
        found = self.queue(queue)
        return seconds(found.max_walltime) if found and found.max_walltime else None


def seconds(text: str) -> int:
    """'D-HH:MM:SS' or 'HH:MM:SS' -> seconds."""
    m = _TIME.match(text)
    if not m:
        raise MirrorError(f"not a time D-HH:MM:SS or HH:MM:SS: {text!r}")
    days, hours = int(m["d"] or 0), int(m["h"])
    return ((days * 24 + hours) * 60 + int(m["m"])) * 60 + int(m["s"])


_REQUIRED = object()


def _take(table: dict[str, Any], where: str, key: str, kind: type, default: Any = _REQUIRED) -> Any:
    """table[key] (removed from it), checked to be of `kind`; `default` when absent, else an error."""
    value = table.pop(key, default)
    if value is _REQUIRED:
        raise MirrorError(f"{where}: {key} is missing")
    if value is default:
        return value
    if kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MirrorError(f"{where}: {key} must be a list of strings, got {value!r}")
        return tuple(value)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise MirrorError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
    return value


def _named(raw: dict[str, Any], key: str, where: str) -> list[tuple[str, dict[str, Any], str]]:
    tables = raw.pop(key, {})
    if not isinstance(tables, dict):
        raise MirrorError(f"{where}: [{key}.NAME] tables expected")
    out = []
    for name, table in tables.items():
        if not _NAME.match(name) or not isinstance(table, dict):
            raise MirrorError(f"{where}: [{key}.{name}] is not a table with a plain name")
        out.append((name, dict(table), f"{where}: [{key}.{name}]"))
    return out


def _sourced(table: dict[str, Any], where: str) -> dict[str, str]:
    """Every fact names its source (a URL, or a URL and what it says)."""
    source = _take(table, where, "source", str, "")
    if not source.startswith("http"):
        raise MirrorError(f"{where}: source must be the doc URL the fact comes from")
    return {"source": source, "unverified": _take(table, where, "unverified", str, "")}


def _done(table: dict[str, Any], where: str) -> None:
    if table:
        raise MirrorError(f"{where}: unknown key(s) {', '.join(sorted(table))}")


def _nodes(raw: dict[str, Any], where: str) -> tuple[NodeType, ...]:
    out = []
    for name, t, at in _named(raw, "nodes", where):
        node = NodeType(name=name, cpus=_take(t, at, "cpus", int), memory_mb=_take(t, at, "memory_mb", int),
                        features=_take(t, at, "features", tuple, ()), gres=_take(t, at, "gres", str, ""),
                        **_sourced(t, at))
        _done(t, at)
        out.append(node)
    return tuple(out)


def _partitions(raw: dict[str, Any], where: str) -> tuple[Partition, ...]:
    out = []
    for name, t, at in _named(raw, "partitions", where):
        out.append(Partition(
            name=name, nodes=_take(t, at, "nodes", tuple), max_time=_take(t, at, "max_time", str, None),
            default=_take(t, at, "default", bool, False), exclusive=_take(t, at, "exclusive", bool, False),
            allow_accounts=_take(t, at, "allow_accounts", tuple, ()),
            allow_qos=_take(t, at, "allow_qos", tuple, ()), qos=_take(t, at, "qos", str, None),
            def_mem_per_cpu=_take(t, at, "def_mem_per_cpu", int, None), **_sourced(t, at)))
        _done(t, at)
    return tuple(out)


def _qos(raw: dict[str, Any], where: str) -> tuple[Qos, ...]:
    out = []
    for name, t, at in _named(raw, "qos", where):
        out.append(Qos(name=name, max_time=_take(t, at, "max_time", str, None),
                       max_tres_per_job=_take(t, at, "max_tres_per_job", str, ""),
                       max_tres_per_user=_take(t, at, "max_tres_per_user", str, ""),
                       flags=_take(t, at, "flags", tuple, ()), **_sourced(t, at)))
        _done(t, at)
    return tuple(out)


def _queues(raw: dict[str, Any], where: str) -> tuple[Queue, ...]:
    out = []
    for name, t, at in _named(raw, "queues", where):
        limits = _take(t, at, "resources_max", dict, {})
        out.append(Queue(name=name, max_walltime=_take(t, at, "max_walltime", str, None),
                         resources_max=tuple(sorted((k, str(v)) for k, v in limits.items())),
                         **_sourced(t, at)))
        _done(t, at)
    return tuple(out)


def _resources(raw: dict[str, Any], where: str) -> tuple[Resource, ...]:
    out = []
    for name, t, at in _named(raw, "resources", where):
        out.append(Resource(name=name, type=_take(t, at, "type", str), flag=_take(t, at, "flag", str, ""),
                            source=_sourced(t, at)["source"]))
        _done(t, at)
    return tuple(out)


def _rules(raw: dict[str, Any], where: str) -> tuple[Rule, ...]:
    out = []
    for i, t in enumerate(raw.pop("rules", [])):
        at = f"{where}: rules[{i}]"
        t = dict(t)
        values = _take(t, at, "values", dict, {})
        rule = Rule(
            message=_take(t, at, "message", str), partition=_take(t, at, "partition", str, None),
            qos=_take(t, at, "qos", str, None), queues=_take(t, at, "queues", tuple, ()),
            reject=_take(t, at, "reject", tuple, ()), require=_take(t, at, "require", tuple, ()),
            require_resources=_take(t, at, "require_resources", tuple, ()),
            min_time=_take(t, at, "min_time", str, None),
            ncpus_per_gpu=_take(t, at, "ncpus_per_gpu", int, None),
            values=tuple(sorted((k, tuple(v)) for k, v in values.items())), **_sourced(t, at))
        _done(t, at)
        bad = [r for r in rule.reject if r not in REJECTABLE]
        bad += [r for r in rule.require if r not in REQUIRABLE]
        if bad or not rule.message:
            raise MirrorError(f"{at}: unknown reject/require {bad} or no message")
        out.append(rule)
    return tuple(out)


def load(path: Path) -> Mirror:
    """One mirror description; MirrorError names the file and the key that is wrong."""
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MirrorError(f"{where}: {exc}") from exc
    parts = {"nodes": _nodes(raw, where), "partitions": _partitions(raw, where), "qos": _qos(raw, where),
             "queues": _queues(raw, where), "resources": _resources(raw, where), "rules": _rules(raw, where)}
    mirror = Mirror(
        site=_take(raw, where, "site", str), scheduler=_take(raw, where, "scheduler", str),
        docs=_take(raw, where, "docs", tuple), account=_take(raw, where, "account", str, None),
        accounts=_take(raw, where, "accounts", tuple, ()),
        qos_access=_take(raw, where, "qos_access", tuple, ()),
        default_qos=_take(raw, where, "default_qos", str, None),
        not_checked=_take(raw, where, "not_checked", tuple, ()),
        unverified=_take(raw, where, "unverified", tuple, ()), path=path, **parts)
    _done(raw, where)
    if mirror.site != path.stem or mirror.scheduler not in {"slurm", "pbs"}:
        raise MirrorError(f"{where}: site must be {path.stem!r} and scheduler slurm or pbs")
    return mirror


def load_all(scheduler: str | None = None) -> list[Mirror]:
    """Every mirror description, by site name (only one scheduler's, when given)."""
    mirrors = [load(p) for p in sorted(MIRRORS.glob("*.toml"))]
    return [m for m in mirrors if scheduler in (None, m.scheduler)]


@contextmanager
def mirror_lock() -> Iterator[None]:
    """One mirror run at a time on this machine: QOS (slurmdbd) and PBS queues and resources are
    shared by every run, so a second run waits for the first."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
