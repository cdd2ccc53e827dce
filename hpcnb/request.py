"""JobRequest: the user's values for one job, validated before they reach a template.

Every refusal is a UsageError with one line naming the flag, the value (repr) and what is allowed.
The values are kept in neutral units (seconds, megabytes); each scheduler writes them in its own
format (hpcnb.schedulers: Scheduler.job_values).
Pure stdlib; imports ClusterConfig only for type checking (config.py imports this module).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpcnb.apps import pick
from hpcnb.errors import UsageError
from hpcnb.names import NAME_RE, NAME_RULE
from hpcnb.profiles import job_resources

if TYPE_CHECKING:
    from hpcnb.config import ClusterConfig
    from hpcnb.profiles import Profile

MAX_SECONDS = 365 * 86400
MAX_COUNT = 4096
MAX_MEM_MB = 1024 * 1024 * 1024  # 1 PiB, far above any node
DEFAULT_HOURS = 1.0

_TIME_RES = (
    re.compile(r"^(?P<d>\d{1,3})-(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2})\Z"),
    re.compile(r"^(?P<h>\d{1,4}):(?P<m>\d{1,2}):(?P<s>\d{1,2})\Z"),
    re.compile(r"^(?P<m>\d{1,5}):(?P<s>\d{1,2})\Z"),
)
_MEM_RE = re.compile(r"^(?P<n>\d{1,12}(?:\.\d{1,6})?)\s?(?P<u>[KMGT])(?:I?B)?\Z", re.IGNORECASE)
_MEM_FACTOR_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


@dataclass(frozen=True)
class JobRequest:
    """Validated values for one job. Directive text comes from these fields only."""

    name: str
    walltime_seconds: int
    partition: str | None = None
    account: str | None = None
    cpus: int | None = None
    mem_mb: int | None = None
    gpus: int | None = None
    notebook_dir: str | None = None
    # From the site profile the partition named (hpcnb.profiles), if it named one:
    profile: str | None = None
    qos: str | None = None
    constraint: str | None = None
    resources: tuple[tuple[str, str], ...] = ()
    directives: tuple[str, ...] = ()
    setup: tuple[str, ...] | None = None  # the profile's own setup lines (None: the cluster's)
    gpu_type: str | None = None
    ntasks: bool = True  # Slurm: --ntasks=1 (a profile may leave it out: ARCHER2's GPU nodes)
    app: str = "jupyter"  # what the job starts (hpcnb.apps)


def _refuse(flag: str, value: Any, allowed: str) -> UsageError:
    return UsageError(f"{flag} {value!r} is not allowed: {allowed}")


def parse_hours(value: Any) -> int:
    """--hours value (number or numeric string) -> whole seconds. Refuses 0, <0, NaN, inf, junk."""
    allowed = "a number of hours > 0 (e.g. 1, 0.5, 12)"
    if isinstance(value, bool):
        raise _refuse("--hours", value, allowed)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _refuse("--hours", value, allowed) from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise _refuse("--hours", value, allowed)
    if not math.isfinite(number) or number <= 0:
        raise _refuse("--hours", value, allowed)
    if number * 3600 > MAX_SECONDS:
        raise _refuse("--hours", value, f"at most {MAX_SECONDS // 3600} hours (365 days)")
    seconds = round(number * 3600)
    if seconds < 60:
        raise _refuse("--hours", value, "at least one minute (0.0167 hours)")
    return seconds


def parse_time(value: Any) -> int:
    """--time HH:MM:SS | MM:SS | D-HH:MM:SS -> seconds."""
    allowed = "HH:MM:SS, MM:SS or D-HH:MM:SS (e.g. 02:30:00, 1-00:00:00)"
    if not isinstance(value, str):
        raise _refuse("--time", value, allowed)
    for rx in _TIME_RES:
        m = rx.fullmatch(value)
        if not m:
            continue
        parts = {k: int(v) for k, v in m.groupdict().items()}
        if parts["s"] >= 60 or ("h" in parts and parts["m"] >= 60) or ("d" in parts and parts["h"] >= 24):
            raise _refuse("--time", value, allowed + ", minutes and seconds below 60")
        seconds = parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts["m"] * 60 + parts["s"]
        if seconds < 60:
            raise _refuse("--time", value, "at least one minute")
        if seconds > MAX_SECONDS:
            raise _refuse("--time", value, "at most 365 days")
        return seconds
    raise _refuse("--time", value, allowed)


def parse_mem(value: Any) -> int:
    """--mem 4G / 500M / 16GB / 1.5g -> megabytes (rounded up)."""
    allowed = "a size with a unit K, M, G or T (e.g. 4G, 500M, 16GB)"
    if not isinstance(value, str):
        raise _refuse("--mem", value, allowed)
    m = _MEM_RE.fullmatch(value)
    if not m:
        raise _refuse("--mem", value, allowed)
    mb = math.ceil(float(m["n"]) * _MEM_FACTOR_MB[m["u"].upper()])
    if mb <= 0:
        raise _refuse("--mem", value, "more than 0")
    if mb > MAX_MEM_MB:
        raise _refuse("--mem", value, "at most 1024T")
    return mb


def _count(flag: str, value: Any) -> int:
    allowed = f"a whole number 1..{MAX_COUNT}"
    if isinstance(value, bool):
        raise _refuse(flag, value, allowed)
    if isinstance(value, str) and re.fullmatch(r"\d{1,5}", value):
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise _refuse(flag, value, allowed)
    return value


def _sched_name(flag: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise _refuse(flag, value, NAME_RULE)
    return value


def _notebook_dir(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise _refuse("--notebook-dir", value, "a path of 1..4096 characters")
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise _refuse("--notebook-dir", value, "a path without control characters")
    return value


def _where(cfg: ClusterConfig, profile: Profile | None) -> str:
    """How a limit's owner is named in a refusal: the cluster, its profile, the doc to read."""
    what = f"profile {profile.name!r} of cluster {cfg.name}" if profile else f"cluster {cfg.name}"
    docs = (profile.docs if profile else None) or cfg.docs
    return what + (f" (see {docs})" if docs else "")


def _refused_flags(cfg: ClusterConfig, profile: Profile | None, given: dict[str, Any]) -> None:
    """Flags the site refuses on this profile (TACC refuses --mem), named with the doc to read."""
    for flag in profile.refuse if profile else ():
        if given.get(flag) is not None:
            raise UsageError(f"--{flag} {given[flag]!r} is not accepted by {_where(cfg, profile)}: "
                             "leave it out (the profile sets it)")


def _walltime(cfg: ClusterConfig, profile: Profile | None, hours: Any, time: str | None) -> int:
    if hours is not None and time is not None:
        raise UsageError(f"--hours {hours!r} and --time {time!r} both given: use one of them")
    limit = (profile.max_hours if profile else None) or cfg.max_hours
    least = profile.min_hours if profile else None
    if hours is None and time is None:  # the default hour, within the profile's limits
        seconds = parse_hours(DEFAULT_HOURS)
        seconds = min(seconds, round(limit * 3600)) if limit else seconds
        return max(seconds, round(least * 3600)) if least else seconds
    seconds = parse_time(time) if time is not None else parse_hours(hours)
    flag, value = ("--time", time) if time is not None else ("--hours", hours)
    if limit is not None and seconds > round(limit * 3600):
        raise _refuse(flag, value, f"at most {limit:g} hours on {_where(cfg, profile)}")
    if least is not None and seconds < round(least * 3600):
        raise _refuse(flag, value, f"at least {least:g} hours on {_where(cfg, profile)}")
    return seconds


def _sizes(cfg: ClusterConfig, profile: Profile | None, cpus: Any, mem: Any, gpus: Any
           ) -> tuple[int | None, int | None, int | None]:
    """(cpus, mem_mb, gpus): the user's, else the profile's defaults; within the profile's limits."""
    n_gpus = _count("--gpus", gpus) if gpus is not None else (profile.gpus if profile else None)
    if profile is not None and n_gpus:
        if not profile.has_gpus:
            raise _refuse("--gpus", gpus, f"{_where(cfg, profile)} has no GPUs (a GPU profile does)")
        if n_gpus > profile.max_gpus:
            raise _refuse("--gpus", gpus, f"at most {profile.max_gpus} on {_where(cfg, profile)}")
    n_cpus = _count("--cpus", cpus) if cpus is not None else None
    mem_mb = parse_mem(mem) if mem is not None else None
    if profile is not None:
        per_gpu = n_gpus or 1
        if n_cpus is None:
            n_cpus = profile.cpus or (profile.cpus_per_gpu * per_gpu if profile.cpus_per_gpu else None)
        if mem_mb is None and (profile.mem or profile.mem_per_gpu):
            mem_mb = parse_mem(profile.mem) if profile.mem else parse_mem(profile.mem_per_gpu) * per_gpu
        if profile.max_cpus and n_cpus and n_cpus > profile.max_cpus:
            raise _refuse("--cpus", cpus, f"at most {profile.max_cpus} on {_where(cfg, profile)}")
    return n_cpus, mem_mb, n_gpus


def _account(cfg: ClusterConfig, profile: Profile | None, account: str | None) -> str | None:
    acct = account if account is not None else cfg.account
    suffix = profile.account_suffix if profile else None
    if acct is None and suffix and profile is not None:
        example = f" (e.g. --account {cfg.account_example})" if cfg.account_example else ""
        raise UsageError(f"{_where(cfg, profile)} charges your project's {suffix} account: give "
                         f"--account{example}, and {suffix} is added")
    if acct is None:
        if cfg.account_required:
            example = f"; an account here looks like {cfg.account_example}" if cfg.account_example else ""
            raise UsageError(f'cluster {cfg.name} needs --account (or account = "..." in its config)'
                             + example + (f"; see {cfg.docs}" if cfg.docs else ""))
        return None
    acct = _sched_name("--account", acct)
    if suffix and not acct.endswith(suffix):  # NERSC: GPU jobs charge the project's _g account
        # Delta names one project bbka-delta-cpu and bbka-delta-gpu: another profile's suffix goes.
        others = sorted({p.account_suffix for p in cfg.profiles if p.account_suffix}, key=len, reverse=True)
        base = next((acct[: -len(o)] for o in others if o != suffix and acct.endswith(o)), acct)
        acct = _sched_name("--account", base + suffix)
    return acct


def build_request(
    cfg: ClusterConfig,
    *,
    partition: str | None = None,
    hours: float | str | None = None,
    time: str | None = None,
    account: str | None = None,
    cpus: int | str | None = None,
    mem: str | None = None,
    gpus: int | str | None = None,
    name: str | None = None,
    notebook_dir: str | None = None,
    app: str | None = None,
) -> JobRequest:
    """Validate the user's values (falling back to cfg's defaults) into a JobRequest. A partition
    that names one of the site's profiles (hpcnb.profiles) brings that profile's recipe, defaults
    and limits; anything over a limit is refused here, before anything is submitted."""
    chosen = partition if partition is not None else cfg.partition
    profile = cfg.profile(chosen)
    _refused_flags(cfg, profile, {"mem": mem, "cpus": cpus, "gpus": gpus, "account": account})
    seconds = _walltime(cfg, profile, hours, time)
    n_cpus, mem_mb, n_gpus = _sizes(cfg, profile, cpus, mem, gpus)
    part = profile.partition if profile is not None else chosen
    nb = notebook_dir if notebook_dir is not None else cfg.notebook_dir
    acct = _account(cfg, profile, account)
    return JobRequest(
        name=_sched_name("--name", "hpcnb" if name is None else name),
        walltime_seconds=seconds,
        partition=None if part is None else _sched_name("--partition", part),
        account=acct,
        cpus=n_cpus,
        mem_mb=mem_mb,
        gpus=n_gpus,
        notebook_dir=None if nb is None else _notebook_dir(nb),
        profile=profile.name if profile else None,
        qos=profile.qos if profile else None,
        constraint=profile.constraint if profile else None,
        resources=job_resources(cfg.resources, profile, acct),
        setup=profile.setup if profile else None,
        gpu_type=profile.gpu_type if profile and n_gpus else None,
        directives=profile.directives if profile else (),
        ntasks=profile.ntasks if profile else True,
        app=pick(cfg.apps, cfg.app if app is None else app, cfg.tunnel).name,
    )
