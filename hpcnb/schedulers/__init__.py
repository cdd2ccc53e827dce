"""Schedulers: pure argv builders and output parsers, one small class per batch system.

Each class is imported when it is first asked for (SCHEDULERS[name], get_scheduler): a command
talks to one scheduler, and importing all five cost `hpcnb list` 12 ms of its start (issue 15).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from hpcnb.schedulers.base import JobState, JobStatus, Scheduler

_CLASSES = {  # name -> (module, class)
    "slurm": ("hpcnb.schedulers.slurm", "SlurmScheduler"),
    "pbs": ("hpcnb.schedulers.pbs", "PBSScheduler"),
    "local": ("hpcnb.schedulers.local", "LocalScheduler"),
    "lsf": ("hpcnb.schedulers.lsf", "LSFScheduler"),
    "sge": ("hpcnb.schedulers.sge", "SGEScheduler"),
}


class _Schedulers(Mapping[str, type[Scheduler]]):
    """name -> Scheduler class, imported on first use."""

    def __getitem__(self, name: str) -> type[Scheduler]:
        module, cls = _CLASSES[name]
        found: type[Scheduler] = getattr(importlib.import_module(module), cls)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(_CLASSES)

    def __len__(self) -> int:
        return len(_CLASSES)


SCHEDULERS: Mapping[str, type[Scheduler]] = _Schedulers()


def get_scheduler(name: str) -> Scheduler:
    """The scheduler called `name` (a key of SCHEDULERS). ValueError for anything else."""
    try:
        return SCHEDULERS[name]()
    except KeyError:
        known = ", ".join(sorted(SCHEDULERS))
        raise ValueError(f"unknown scheduler {name!r} (known: {known})") from None


__all__ = ["SCHEDULERS", "JobState", "JobStatus", "Scheduler", "get_scheduler"]
