"""Slurm: sbatch / squeue / sacct / scancel argv builders and parsers (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from hpcnb.schedulers.base import JobState, JobStatus, Scheduler, check_ids, hms, parse_duration, size

if TYPE_CHECKING:
    from hpcnb.config import ClusterConfig
    from hpcnb.request import JobRequest

# squeue(1) and sacct(1) "JOB STATE CODES" (long names, as %T / State print them).
# https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES
# Anything not listed (a newer Slurm's new state) maps to UNKNOWN.
STATE_MAP: dict[str, JobState] = {
    "BOOT_FAIL": JobState.NODE_FAIL,      # launch failure, typically hardware
    "CANCELLED": JobState.CANCELLED,      # sacct prints "CANCELLED by <uid>"
    "COMPLETED": JobState.COMPLETED,
    "CONFIGURING": JobState.PENDING,      # allocated, nodes still booting: nothing runs yet
    "COMPLETING": JobState.COMPLETING,
    "DEADLINE": JobState.TIMEOUT,         # terminated on --deadline
    "FAILED": JobState.FAILED,
    "NODE_FAIL": JobState.NODE_FAIL,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "PENDING": JobState.PENDING,
    "PREEMPTED": JobState.PREEMPTED,
    "RUNNING": JobState.RUNNING,
    "RESV_DEL_HOLD": JobState.HELD,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.HELD,
    "REQUEUED": JobState.PENDING,
    "RESIZING": JobState.RUNNING,
    "REVOKED": JobState.CANCELLED,        # federation: a sibling started elsewhere
    "SIGNALING": JobState.RUNNING,
    "SPECIAL_EXIT": JobState.FAILED,      # requeued-held after a special exit value
    "STAGE_OUT": JobState.COMPLETING,
    "STOPPED": JobState.SUSPENDED,
    "SUSPENDED": JobState.SUSPENDED,
    "TIMEOUT": JobState.TIMEOUT,
}

# squeue --format fields (squeue(1) "-o <output_format>"), joined by '|'. No width is given, so
# no field is truncated. The job name is the only free text (it may contain '|'), so it goes
# LAST and the line is split with maxsplit.
#   %i job id   %T state (long)   %P partition   %N nodes   %L time left   %r reason
#   %S start time (actual, or expected for pending)   %j name
SQUEUE_FIELDS = ("%i", "%T", "%P", "%N", "%L", "%r", "%S", "%j")
SQUEUE_FORMAT = "|".join(SQUEUE_FIELDS)

# sacct --parsable2 separates with '|' and never truncates; JobName last for the same reason.
SACCT_FIELDS = ("JobID", "State", "Partition", "NodeList", "ExitCode", "Reason", "JobName")

# Texts Slurm's commands print when slurmctld does not answer (src/common/slurm_errno.c).
# Captured: "slurm_load_jobs error: Unable to contact slurm controller (connect failure)".
CONTROLLER_DOWN = (
    "unable to contact slurm controller",
    "socket timed out",
    "slurm controller not responding",
    "connection refused",
    "connection timed out",
    "zero bytes were transmitted or received",
    "communication connection failure",
    "slurm backup controller in standby mode",
)

# squeue -j with only unknown ids: "slurm_load_jobs error: Invalid job id specified", exit 1.
# scancel: "scancel: error: Kill job error on job id 9: Invalid job id specified".
UNKNOWN_JOB = ("invalid job id specified", "invalid job id")

_NO_VALUE = {"", "(null)", "N/A", "None", "NONE", "None assigned", "Unknown", "n/a"}


def _value(text: str) -> str | None:
    text = text.strip()
    return None if text in _NO_VALUE else text


def first_host(hostlist: str) -> str | None:
    """First host of a Slurm hostlist: 'node[01-03,07],gpu1' -> 'node01'; '(null)' -> None."""
    text = _value(hostlist)
    if text is None:
        return None
    m = re.match(r"^([^,\[]*)(?:\[([^\]]*)\])?([^,]*)", text)
    if not m:
        return None
    prefix, ranges, suffix = m.groups()
    if ranges:
        prefix += re.split(r"[,-]", ranges, maxsplit=1)[0]
    return (prefix + suffix) or None


def _rows(stdout: str, fields: Sequence[str]) -> Iterator[list[str]]:
    """The '|'-separated lines of our own format, stripped; the last field (the job name, the only
    free text) may hold '|'. Lines not in our format (a warning) are skipped: never guess."""
    for line in stdout.splitlines():
        parts = line.split("|", len(fields) - 1)
        if line.strip() and len(parts) == len(fields):
            yield [p.strip() for p in parts]


def slurm_time(seconds: int) -> str:
    """sbatch --time: HH:MM:SS below a day, D-HH:MM:SS from a day on (sbatch(1) --time)."""
    days, rest = divmod(int(seconds), 86400)
    return hms(rest) if days == 0 else f"{days}-{hms(rest)}"


def slurm_mem(mb: int) -> str:
    """sbatch --mem: 4G or 500M (sbatch(1): the default unit is M; G when it is exact)."""
    return size(mb, ("G", "M"))


def time_left(text: str) -> int | None:
    """squeue %L: 'UNLIMITED', 'NOT_SET', 'INVALID' -> None; 'D-HH:MM:SS' etc. -> seconds."""
    return parse_duration(text)


def map_state(raw: str) -> JobState:
    """'CANCELLED by 1000' -> CANCELLED; a state with a '+' flag suffix is stripped too."""
    word = raw.strip().split(" ", 1)[0].rstrip("+")
    return STATE_MAP.get(word, JobState.UNKNOWN)


class SlurmScheduler(Scheduler):
    """Slurm via sbatch/squeue/sacct/scancel (tested with 22.05 output and the man pages)."""

    name = "slurm"
    template = "slurm.sh.j2"
    controller_down = CONTROLLER_DOWN
    unknown_job = UNKNOWN_JOB
    directive_prefix = "#SBATCH"
    partition_flags = ("--partition", "--qos")  # --qos: sites that select by QOS (NERSC)
    account_flags = ("--account",)
    gpu_flags = ("--gpus", "--gres", "--gpus-per-node")
    commands = ("sbatch", "squeue", "scancel")
    optional_commands = ("sacct", "sinfo")

    def job_values(self, cfg: ClusterConfig, request: JobRequest) -> dict[str, str]:
        values = {"time": slurm_time(request.walltime_seconds)}
        if request.mem_mb:
            values["mem"] = slurm_mem(request.mem_mb)
        return values

    def queues_argv(self, cfg: ClusterConfig) -> list[str] | None:
        if cfg.partition_flag == "--qos":
            return ["sacctmgr", "--noheader", "--parsable2", "show", "qos", "format=Name"]
        return ["sinfo", "--noheader", "--format=%P"]

    def parse_queues(self, stdout: str) -> tuple[list[str], str | None]:
        # sinfo %P marks the default partition with a trailing '*' (sinfo(1)); sacctmgr has none.
        names: list[str] = []
        default = None
        for raw in stdout.replace("|", "\n").splitlines():
            name = raw.strip()
            if name.endswith("*"):
                name = default = name[:-1]
            if name and name not in names:
                names.append(name)
        return names, default

    def submit_argv(self) -> list[str]:
        # sbatch(1): "If no file name is specified, sbatch will read in a script from standard
        # input." Note `sbatch -` does NOT mean stdin ("Unable to open file -").
        return ["sbatch", "--parsable"]

    def parse_job_id(self, stdout: str) -> str:
        # --parsable: "jobid[;cluster_name]" (sbatch(1)). Warnings go to stderr.
        lines = [ln.strip() for ln in stdout.strip().splitlines() if ln.strip()]
        if not lines:
            raise ValueError("sbatch printed no job id")
        job_id = lines[-1].split(";", 1)[0]
        if not re.fullmatch(r"\d+", job_id):
            raise ValueError(f"sbatch printed no job id: {lines[-1]!r}")
        return job_id

    def _squeue(self, job_ids: Sequence[str], user: str | None) -> list[str]:
        argv = ["squeue", "--noheader", f"--format={SQUEUE_FORMAT}"]
        ids = check_ids(job_ids)
        if ids:
            argv.append("--jobs=" + ",".join(ids))
        if user:
            argv.append(f"--user={user}")
        elif not ids:
            argv.append("--me")
        return argv

    def status_argv(self, job_ids: Sequence[str], user: str | None) -> list[str]:
        # --states=all: by default squeue hides jobs that just ended (still in slurmctld memory
        # for MinJobAge seconds); with it we see COMPLETED/FAILED/TIMEOUT before sacct must.
        return [*self._squeue(job_ids, user), "--states=all"]

    def parse_status(self, stdout: str) -> dict[str, JobStatus]:
        jobs: dict[str, JobStatus] = {}
        for job_id, raw, partition, nodes, left, reason, start, name in _rows(stdout, SQUEUE_FIELDS):
            state = map_state(raw)
            jobs[job_id] = JobStatus(
                job_id=job_id, state=state, raw_state=raw, name=name or None,
                partition=_value(partition), node=first_host(nodes),
                reason=_value(reason), time_left_s=time_left(left),
                expected_start=_value(start) if state is JobState.PENDING else None,
            )
        return jobs

    def history_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        ids = check_ids(job_ids)
        if not ids:
            return None
        # --allocations: one line per job, not per step. sacct(1) "DEFAULT TIME WINDOW": with
        # --jobs the window is unbounded, so old jobs are found too.
        return ["sacct", "--noheader", "--parsable2", "--allocations",
                "--jobs=" + ",".join(ids), "--format=" + ",".join(SACCT_FIELDS)]

    def parse_history(self, stdout: str) -> dict[str, JobStatus]:
        jobs: dict[str, JobStatus] = {}
        for job_id, raw, partition, nodes, exit_code, reason, name in _rows(stdout, SACCT_FIELDS):
            jobs[job_id] = JobStatus(
                job_id=job_id, state=map_state(raw), raw_state=raw, name=name or None,
                partition=_value(partition), node=first_host(nodes), reason=_value(reason),
                exit_code=_value(exit_code),
            )
        return jobs

    def history_unsupported(self, stderr: str, exit_status: int) -> bool:
        # Captured from sacct 22.05 on a cluster without slurmdbd (AccountingStorageType=none).
        return exit_status != 0 and "accounting storage is disabled" in stderr.lower()

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["scancel", check_ids([job_id])[0]]

    step_in_refusal = None

    def step_in_argv(self, job_id: str, command: Sequence[str], tty: bool) -> list[str]:
        """srun(1) of a step in the running job: --overlap shares the resources its notebook
        holds (Slurm >= 20.11: https://slurm.schedmd.com/srun.html#OPT_overlap), --pty gives
        the step a terminal. The words are one shell command, as `ssh node CMD` takes them."""
        argv = ["srun", f"--jobid={check_ids([job_id])[0]}", "--overlap", *(["--pty"] if tty else [])]
        return [*argv, "bash", "-l", *(["-c", " ".join(command)] if command else [])]

