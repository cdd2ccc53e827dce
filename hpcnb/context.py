"""One command's view of one cluster: its config, its scheduler, and (opened lazily) its connection.

One connection per cluster per command: every query, file read and tunnel of the command goes over
the same Remote. `list` with nothing active opens none at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hpcnb.config import ClusterConfig
from hpcnb.errors import CommandError, SchedulerUnavailable
from hpcnb.remote import CommandResult, LocalRemote, Remote
from hpcnb.schedulers import JobState, JobStatus, Scheduler, get_scheduler

Notify = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


@dataclass
class Context:
    cfg: ClusterConfig
    notify: Notify = _quiet
    accept_new_host_key: bool = False
    scheduler: Scheduler = field(init=False)
    _remote: Remote | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.scheduler = get_scheduler(self.cfg.scheduler)

    @property
    def is_local(self) -> bool:
        return self.cfg.scheduler == "local"

    @property
    def remote(self) -> Remote:
        if self._remote is None:
            self._remote = self.connect()
        return self._remote

    def connect(self) -> Remote:
        """A new connection to the cluster's login host (or this machine, for `local`)."""
        if self.is_local:
            return LocalRemote()
        import logging

        from hpcnb.ssh import SSHRemote  # paramiko is slow to import: only when a command needs it

        # paramiko logs refused channels itself; our errors already say it, in one line.
        logging.getLogger("paramiko").addHandler(logging.NullHandler())
        logging.getLogger("paramiko").propagate = False

        return SSHRemote.from_config(self.cfg, accept_new_host_key=self.accept_new_host_key)

    def is_own(self, remote: object) -> bool:
        """Whether `remote` is this context's own connection (which close() will close)."""
        return remote is not None and remote is self._remote

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- scheduler queries: argv from the pure scheduler, run here --------------------------

    def run_checked(self, argv: Sequence[str], what: str, *, stdin: str | None = None) -> CommandResult:
        result = self.remote.run(argv, stdin=stdin)
        if result.exit_status != 0:
            raise self.command_error(result, what)
        return result

    def command_error(self, result: CommandResult, what: str) -> CommandError:
        cls = (
            SchedulerUnavailable
            if self.scheduler.controller_unavailable(result.stderr, result.exit_status)
            else CommandError
        )
        return cls(what, argv=result.argv, exit_status=result.exit_status, stderr=result.stderr)

    def statuses(self, job_ids: Sequence[str], remote: Remote | None = None) -> dict[str, JobStatus]:
        """The state of many jobs in one queue query (+ one history query for those that left it).

        A controller that does not answer makes every job UNKNOWN: never "gone". Jobs the scheduler
        does not know at all are absent from the result.
        """
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        remote = remote or self.remote
        sched = self.scheduler
        result = remote.run(sched.status_argv(ids, self.cfg.user))
        statuses: dict[str, JobStatus] = {}
        if result.exit_status == 0:
            statuses = {k: v for k, v in sched.parse_status(result.stdout).items() if k in ids}
        elif sched.controller_unavailable(result.stderr, result.exit_status):
            self.notify(f"the {sched.name} controller does not answer; will keep trying")
            return {i: unknown(i, result.stderr) for i in ids}
        elif not sched.is_unknown_job_error(result.stderr, result.exit_status):
            raise self.command_error(result, "job status query failed")

        missing = [i for i in ids if i not in statuses]
        history = sched.history_argv(missing) if missing else None
        if history:
            past = remote.run(history)
            if past.exit_status == 0:
                statuses.update({k: v for k, v in sched.parse_history(past.stdout).items() if k in ids})
            elif sched.controller_unavailable(past.stderr, past.exit_status):
                statuses.update({i: unknown(i, past.stderr) for i in missing})
            elif not (
                sched.history_unsupported(past.stderr, past.exit_status)
                or sched.is_unknown_job_error(past.stderr, past.exit_status)
            ):
                raise self.command_error(past, "job history query failed")
        return statuses


def unknown(job_id: str, why: str) -> JobStatus:
    reason = why.strip().splitlines()[-1] if why.strip() else "controller not responding"
    return JobStatus(job_id=job_id, state=JobState.UNKNOWN, raw_state="UNKNOWN", reason=reason)
