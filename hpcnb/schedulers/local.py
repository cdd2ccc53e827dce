"""The built-in `local` scheduler: argv for `python -m hpcnb.localjob` and its parser (pure).

For trying hpcnb without a cluster, on Linux or macOS. The job script (local.sh.j2) must carry its
time limit as the line `# hpcnb-walltime-seconds: N`; the job sees HPCNB_JOB_ID and HPCNB_WALLTIME_S.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from hpcnb.errors import HpcnbError
from hpcnb.schedulers.base import JobState, JobStatus, Scheduler, check_ids

UNSUPPORTED = "the local backend needs Linux or macOS (bash, process groups)"

# localjob's state words (state.json "state") -> JobState. Documented in hpcnb/localjob.py.
STATE_MAP: dict[str, JobState] = {
    "pending": JobState.PENDING,
    "running": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
    "timeout": JobState.TIMEOUT,
}


class LocalScheduler(Scheduler):
    """Jobs are detached processes on this machine, supervised by hpcnb.localjob."""

    name = "local"
    template = "local.sh.j2"
    unknown_job = ("unknown job id",)  # what hpcnb.localjob prints; there is no controller

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    def _argv(self, *args: str) -> list[str]:
        return [self.python, "-m", "hpcnb.localjob", *args]

    def submit_argv(self) -> list[str]:
        # hpcnb.localjob runs bash in its own session and signals process groups: POSIX only.
        # Checked here, the start of every local submit, before anything runs or is recorded.
        if sys.platform == "win32":
            raise HpcnbError(UNSUPPORTED)
        return self._argv("submit")

    def parse_job_id(self, stdout: str) -> str:
        lines = stdout.strip().splitlines()
        if not lines or not lines[-1].strip().isdigit():
            raise ValueError(f"hpcnb.localjob printed no job id: {stdout.strip()[:200]!r}")
        return lines[-1].strip()

    def status_argv(self, job_ids: Sequence[str], user: str | None) -> list[str]:
        return self._argv("status", *check_ids(job_ids))

    def parse_status(self, stdout: str) -> dict[str, JobStatus]:
        jobs: dict[str, JobStatus] = {}
        for line in stdout.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or "job_id" not in rec:
                continue
            raw = str(rec.get("state", ""))
            job_id = str(rec["job_id"])
            jobs[job_id] = JobStatus(
                job_id=job_id, state=STATE_MAP.get(raw, JobState.UNKNOWN), raw_state=raw,
                name=rec.get("name"), partition=None, node=rec.get("node"),
                reason=rec.get("reason"), time_left_s=rec.get("time_left_s"),
                exit_code=rec.get("exit_code"),
            )
        return jobs

    # No history: a local job's record stays in its directory, so status always answers.

    def cancel_argv(self, job_id: str) -> list[str]:
        return self._argv("cancel", *check_ids([job_id]))
