"""Schedulers: pure argv builders and output parsers, one small class per batch system."""

from __future__ import annotations

from hpcnb.schedulers.base import JobState, JobStatus, Scheduler
from hpcnb.schedulers.local import LocalScheduler
from hpcnb.schedulers.lsf import LSFScheduler
from hpcnb.schedulers.pbs import PBSScheduler
from hpcnb.schedulers.sge import SGEScheduler
from hpcnb.schedulers.slurm import SlurmScheduler

SCHEDULERS: dict[str, type[Scheduler]] = {
    "slurm": SlurmScheduler,
    "pbs": PBSScheduler,
    "local": LocalScheduler,
    "lsf": LSFScheduler,
    "sge": SGEScheduler,
}


def get_scheduler(name: str) -> Scheduler:
    """The scheduler called `name` (a key of SCHEDULERS). ValueError for anything else."""
    try:
        return SCHEDULERS[name]()
    except KeyError:
        known = ", ".join(sorted(SCHEDULERS))
        raise ValueError(f"unknown scheduler {name!r} (known: {known})") from None


__all__ = ["SCHEDULERS", "JobState", "JobStatus", "Scheduler", "get_scheduler"]
