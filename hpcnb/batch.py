"""The batch system, asked over a Remote: submit, the status of many jobs in one query, cancel.

The scheduler classes (hpcnb.schedulers) build the commands and parse what they print; this runs
them and decides what their failures mean:
  * one queue query for all the jobs asked about, then one history query (sacct, qstat -x) for
    those that have left the queue;
  * a controller that does not answer makes every job UNKNOWN, never "gone";
  * a job neither the queue nor the history knows is simply absent from the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from hpcnb.errors import (
    CommandError,
    ConnectionLost,
    HpcnbError,
    JobNotFound,
    SchedulerUnavailable,
    last_line,
)
from hpcnb.schedulers import JobState, JobStatus, Scheduler

if TYPE_CHECKING:  # hpcnb.remote brings logging and subprocess, which `hpcnb list` never uses
    from hpcnb.remote import CommandResult, Remote

Notify = Callable[[str], None]


def unknown(job_id: str, why: str) -> JobStatus:
    """A job whose state the controller could not tell us."""
    return JobStatus(job_id=job_id, state=JobState.UNKNOWN, raw_state="UNKNOWN",
                     reason=last_line(why) or "controller not responding")


class BatchSystem:
    """One cluster's scheduler, over the connection `remote()` gives (opened when first needed)."""

    def __init__(self, scheduler: Scheduler, remote: Callable[[], Remote], *, cluster: str,
                 user: str | None = None, notify: Notify = lambda _message: None) -> None:
        self.scheduler = scheduler
        self._remote = remote
        self.cluster, self.user, self.notify = cluster, user, notify

    def command_error(self, result: CommandResult, what: str) -> CommandError:
        unavailable = self.scheduler.controller_unavailable(result.stderr, result.exit_status)
        cls = SchedulerUnavailable if unavailable else CommandError
        return cls(what, argv=result.argv, exit_status=result.exit_status, stderr=result.stderr)

    def submit(self, script: str) -> str:
        """Submit the job script (given on the submit command's stdin); the job id. One command on
        the login host, no file left behind."""
        result = self._remote().run(self.scheduler.submit_argv(), stdin=script)
        if result.exit_status != 0:
            raise self.command_error(result, "the scheduler refused the job")
        try:
            return self.scheduler.parse_job_id(result.stdout)
        except ValueError as exc:
            raise HpcnbError(f"could not read a job id from `{' '.join(result.argv)}`: {exc}") from exc

    def cancel(self, job_id: str) -> None:
        result = self._remote().run(self.scheduler.cancel_argv(job_id))
        if result.exit_status == 0:
            return
        if self.scheduler.is_unknown_job_error(result.stderr, result.exit_status):
            raise JobNotFound(f"no job {job_id} on cluster {self.cluster!r}")
        raise self.command_error(result, f"could not cancel job {job_id}")

    def statuses(self, job_ids: Sequence[str], remote: Remote | None = None) -> dict[str, JobStatus]:
        """The state of many jobs in one queue query (+ one history query for those that left it),
        over `remote` if given (a tunnel's own connection), else the cluster's."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        remote = remote or self._remote()
        sched = self.scheduler
        result = self._query(remote, sched.status_argv(ids, self.user))
        if sched.controller_unavailable(result.stderr, result.exit_status):
            self.notify(f"the {sched.name} controller does not answer; will keep trying")
            return {i: unknown(i, result.stderr) for i in ids}
        if result.exit_status != 0 and not sched.is_unknown_job_error(result.stderr, result.exit_status):
            raise self.command_error(result, "job status query failed")
        # An unknown id fails the whole command (PBS qstat exits 153), but the jobs it knows are
        # still printed: keep them.
        statuses = {k: v for k, v in sched.parse_status(result.stdout).items() if k in ids}
        # Jobs the queue no longer has, and those it shows ended without an exit code (squeue
        # keeps a finished job for MinJobAge but prints no exit code; sacct does): the history.
        missing = [i for i in ids if i not in statuses
                   or (statuses[i].state.is_final and statuses[i].exit_code is None)]
        history = sched.history_argv(missing) if missing else None
        if history:
            statuses.update(self._history(remote, history, ids, missing))
        return statuses

    def _query(self, remote: Remote, argv: list[str]) -> CommandResult:
        """A query (it changes nothing on the cluster), asked once more when the connection dropped
        under it: through a keeper or OpenSSH's master the second try is on a new login, so one
        dropped connection does not fail `hpcnb list` (or the waiting of a submit)."""
        try:
            return remote.run(argv)
        except ConnectionLost:
            self.notify(f"the connection to {self.cluster}'s login host dropped during `{argv[0]}`; "
                        "asking again")
            return remote.run(argv)

    def _history(self, remote: Remote, argv: list[str], ids: list[str], missing: list[str]
                 ) -> dict[str, JobStatus]:
        sched = self.scheduler
        past = self._query(remote, argv)
        if sched.controller_unavailable(past.stderr, past.exit_status):
            return {i: unknown(i, past.stderr) for i in missing}
        if sched.history_unsupported(past.stderr, past.exit_status):
            return {}
        if past.exit_status != 0 and not sched.is_unknown_job_error(past.stderr, past.exit_status):
            raise self.command_error(past, "job history query failed")
        return {k: v for k, v in sched.parse_history(past.stdout).items() if k in ids}
