"""Scheduler-neutral job states and the interface every scheduler class implements.

Pure: no I/O. A scheduler builds argv lists and parses the text those commands print (hpcnb.batch
runs them through a Remote), names its job-script template and formats the values that go into
its directives (hpcnb.render). Shape borrowed from psij-python's executors (builders + parsers +
a documented state map) and dask-jobqueue (one small class each). Adding a scheduler is one
module here, one template in templates/, and tests against its captured output.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpcnb.config import ClusterConfig
    from hpcnb.request import JobRequest


class JobState(str, Enum):
    """A job's state, the same words for every scheduler (values are lower-case)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETING = "completing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out-of-memory"
    NODE_FAIL = "node-fail"
    PREEMPTED = "preempted"
    HELD = "held"
    SUSPENDED = "suspended"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        """The job has ended and will not run again (as this job id)."""
        return self in _FINAL

    def __str__(self) -> str:
        return self.value


_FINAL = frozenset({
    JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT,
    JobState.OUT_OF_MEMORY, JobState.NODE_FAIL, JobState.PREEMPTED,
})


@dataclass(frozen=True)
class JobStatus:
    """One job as the scheduler reports it. `raw_state` is the scheduler's own word."""

    job_id: str
    state: JobState
    raw_state: str
    name: str | None = None
    partition: str | None = None
    node: str | None = None
    reason: str | None = None
    time_left_s: int | None = None
    expected_start: str | None = None
    exit_code: str | None = None


class Scheduler(ABC):
    """Argv builders and output parsers for one batch system. Stateless; safe to share."""

    name: str
    template: str  # its job-script template in templates/
    directive_prefix: str | None = None  # "#SBATCH", "#PBS": the header lines the template writes
    # The directive that carries --partition / --account / --gpus: the cluster config may pick one
    # of these (partition_flag, account_flag, gpu_flag); the first is the default.
    partition_flags: tuple[str, ...] = ()
    account_flags: tuple[str, ...] = ()
    gpu_flags: tuple[str, ...] = ()
    # The commands hpcnb runs on the login host: `hpcnb doctor` checks they are on PATH (the
    # optional ones only improve answers).
    commands: tuple[str, ...] = ()
    optional_commands: tuple[str, ...] = ()
    queue_word = "partition"  # what the site calls --partition: partition (Slurm), queue (PBS)

    def flags(self, cfg: ClusterConfig) -> dict[str, str]:
        """The directive flags for cfg: its own where they belong to this scheduler, else ours."""
        chosen = {"partition": cfg.partition_flag, "account": cfg.account_flag, "gpu": cfg.gpu_flag}
        out = {}
        for key, choices in (("partition", self.partition_flags), ("account", self.account_flags),
                             ("gpu", self.gpu_flags)):
            value = chosen[key]
            out[key] = value if value in choices else (choices[0] if choices else "")
        return out

    def job_values(self, cfg: ClusterConfig, request: JobRequest) -> dict[str, str]:
        """The request's values in this scheduler's own formats, for its template's directives."""
        return {}

    def queues_argv(self, cfg: ClusterConfig) -> list[str] | None:
        """A command listing the partitions (queues, QOS) cfg.partition may name; None: none."""
        return None

    def parse_queues(self, stdout: str) -> tuple[list[str], str | None]:
        """(names, the default one) from queues_argv's output."""
        return [], None

    @abstractmethod
    def submit_argv(self) -> list[str]:
        """The submit command; the rendered job script is given on its stdin."""

    @abstractmethod
    def parse_job_id(self, stdout: str) -> str:
        """The job id from the submit command's stdout. Raises ValueError on anything else."""

    @abstractmethod
    def status_argv(self, job_ids: Sequence[str], user: str | None) -> list[str]:
        """ONE query for all of `job_ids` (or all of `user`'s jobs when job_ids is empty)."""

    @abstractmethod
    def parse_status(self, stdout: str) -> dict[str, JobStatus]:
        """Jobs the status command printed, by id. Jobs it did not print are simply absent."""

    def step_in_argv(self, job_id: str, command: Sequence[str], tty: bool) -> list[str] | None:
        """A command on the login host that runs COMMAND (a shell when empty) inside the running
        job, on its node, for sites without SSH to compute nodes; None: this scheduler has none."""
        return None

    # Why it cannot step into a running job from the login host (None: it can).
    step_in_refusal: str | None = "it has no command for it"

    def history_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        """A query for jobs that have left the queue (sacct, qstat -x); None if there is none."""
        return None

    def parse_history(self, stdout: str) -> dict[str, JobStatus]:
        """Jobs the history command printed, by id."""
        return {}

    def history_unsupported(self, stderr: str, exit_status: int) -> bool:
        """The history command failed because this site cannot answer it at all.

        (accounting disabled, a qstat without -x): treat every job as "no record", not as an error.
        """
        return False

    @abstractmethod
    def cancel_argv(self, job_id: str) -> list[str]:
        """The command that cancels one job."""

    # What the scheduler's commands print (matched lower case) when its controller does not answer,
    # and when the asked-for job ids are unknown.
    controller_down: tuple[str, ...] = ()
    unknown_job: tuple[str, ...] = ()

    def controller_unavailable(self, result_stderr: str, exit_status: int) -> bool:
        """The command failed because the controller/server did not answer: state is UNKNOWN."""
        text = result_stderr.lower()
        return exit_status != 0 and any(s in text for s in self.controller_down)

    def is_unknown_job_error(self, stderr: str, exit_status: int | None = None) -> bool:
        """The command failed only because (all) the asked-for job ids are unknown."""
        text = stderr.lower()
        return any(s in text for s in self.unknown_job)


# ---- small helpers shared by the parsers and formatters ------------------------------------------


def hms(seconds: int) -> str:
    """Seconds -> HH:MM:SS, hours unbounded (48:00:00): PBS walltime, and Slurm's below a day."""
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def size(mb: int, units: tuple[str, str]) -> str:
    """Megabytes -> a whole number of GB when exact, else MB, with the scheduler's unit words."""
    gb_unit, mb_unit = units
    return f"{mb // 1024}{gb_unit}" if mb % 1024 == 0 else f"{mb}{mb_unit}"


_DURATION = re.compile(r"^(?:(?P<d>\d+)-)?(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+)$")


def parse_duration(text: str) -> int | None:
    """'D-HH:MM:SS', 'HH:MM:SS', 'MM:SS' (Slurm and PBS) -> seconds; None for anything else.

    Slurm's time formats are in squeue(1) "%L" and sbatch(1) "--time"; PBS walltime is
    [[HH:]MM:]SS per pbs_resources(7B). A bare number of seconds is accepted too (PBS).
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    m = _DURATION.match(text)
    if not m:
        return None
    days, hours = int(m["d"] or 0), int(m["h"] or 0)
    return ((days * 24 + hours) * 60 + int(m["m"])) * 60 + int(m["s"])


def check_ids(job_ids: Sequence[str], shape: re.Pattern[str] | None = None,
              what: str = "a job id") -> list[str]:
    """Job ids are passed as argv words; refuse anything that could be read as an option, and,
    with `shape`, anything that is not this scheduler's kind of id."""
    ids = [str(j).strip() for j in job_ids]
    for j in ids:
        if not j or j.startswith("-") or any(c.isspace() or c == "," for c in j):
            raise ValueError(f"not a job id: {j!r}")
        if shape is not None and not shape.match(j):
            raise ValueError(f"not {what}: {j!r}")
    return ids
