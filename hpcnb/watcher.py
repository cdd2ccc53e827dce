"""Watching one job: every wait of hpcnb on a job, with one polling policy and one clock.

Two sources, two costs:
  * the job's own files in the user's home on the cluster (hpcnb.handshake): connection.json once
    Jupyter answers, `ended` when the notebook stops, job.log. A file read on the login host.
  * the scheduler (hpcnb.batch): each squeue/qstat is an RPC to a controller that the whole
    cluster shares, so it is asked sparingly: after 5, 10, 20, then every 30 s while a job waits
    to start; every 60 s while attached; at once when the `ended` file appears (to say why).
A controller that does not answer is UNKNOWN (keep waiting), never "gone"; a job the scheduler
does not know three times in a row is gone. The `ended` file wins over a scheduler that still says
RUNNING (the notebook is gone); the scheduler's final state wins over a missing `ended` file (a job
killed too hard to write it).

The clock is injected (Clock), so every loop here runs in unit tests without waiting.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from hpcnb import handshake as hs
from hpcnb.batch import BatchSystem
from hpcnb.errors import HpcnbError, JobEnded, JobNotFound, JobRequeued, StartTimeout, logs_hint
from hpcnb.remote import Remote
from hpcnb.schedulers import JobState, JobStatus

# The launcher's exit code when Jupyter never answered within start_timeout (templates/launcher.py).
START_TIMEOUT_EXIT = 124
# The job script's exit code when it cannot make its session folder (templates/_body.sh.j2): the
# job then has nowhere to write, so this is the only way to tell the user why.
SESSION_DIR_EXIT = 70
REQUEUE_CHECKS = 5  # scheduler queries (requeue_pause apart) telling a requeue from an end


@dataclass(frozen=True)
class PollPolicy:
    """How often each source is read, in seconds, per situation."""

    # The scheduler while the job waits to start: asked at 0, 2, 15, 35, 65 s, ... (four in the
    # first minute); 2 s sees a job that started at once (an idle debug partition). The job's
    # files are read only with these queries until the scheduler says it runs.
    queue_backoff: tuple[float, ...] = (2.0, 13.0, 20.0, 30.0)
    files_queued: float = 2.0  # the longest sleep while the job waits (files: with each status query)
    files_running: float = 0.25  # ... once it runs: the notebook is about to answer
    start_grace: float = 30.0  # beyond start_timeout before a running job's notebook is given up
    misses: int = 3  # status queries in a row that do not know the job: it is gone
    attached_files: float = 5.0  # `ended`, while a tunnel is up
    attached_status: float = 60.0  # the scheduler, while a tunnel is up
    follow_files: float = 1.0  # job.log, for `logs -f`
    follow_status: float = 30.0  # the scheduler, for `logs -f`
    cancel_wait: float = 15.0  # how long `cancel` waits to see the job end
    cancel_backoff: tuple[float, float] = (0.5, 4.0)  # first and largest pause in that wait
    requeue_pause: float = 2.0  # between the scheduler queries that tell a requeue from an end


# A clock that no NTP step or date change moves, and that goes on while the laptop sleeps (the
# job's time limit does): Linux's CLOCK_BOOTTIME, macOS's CLOCK_MONOTONIC (clock_gettime(3): it
# "continues to increment while the system is asleep"); elsewhere time.monotonic (Windows: the
# tick count, which counts sleep too).
_STEADY = getattr(time, "CLOCK_BOOTTIME", None) if sys.platform.startswith("linux") else \
    getattr(time, "CLOCK_MONOTONIC", None) if sys.platform == "darwin" else None


class Clock:
    """Time as the watcher sees it; tests pass one that advances without sleeping."""

    def monotonic(self) -> float:
        return time.clock_gettime(_STEADY) if _STEADY is not None else time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Sleep up to `seconds`, or until `stop` is set; whether it is."""
        return stop.wait(seconds)


@dataclass(frozen=True)
class WaitEvent:
    """What a wait for the notebook is at, for a status line: queued, starting, unknown, ready."""

    phase: str
    status: JobStatus | None
    elapsed: float


def _exit_number(exit_code: str | None) -> int | None:
    """'70:0' (Slurm: code:signal), '70' (PBS, local) -> 70."""
    head = (exit_code or "").split(":", 1)[0].strip()
    return int(head) if head.isdigit() else None


def _phase(status: JobStatus | None) -> str:
    if status is not None and status.state is JobState.RUNNING:
        return "starting"
    if status is not None and status.state is JobState.UNKNOWN:
        return "unknown"
    return "queued"


def _ignore(*_args: object) -> None:
    return None


class JobWatcher:
    """Waits on one job over a cluster's connection; records each status it learns."""

    def __init__(self, files: hs.JobFiles, batch: BatchSystem, remote: Callable[[], Remote], *,
                 start_timeout: int, record: Callable[[JobStatus], None] = _ignore,
                 notify: Callable[[str], None] = _ignore, policy: PollPolicy | None = None,
                 clock: Clock | None = None, alert: Callable[[str], None] = _ignore) -> None:
        self.files, self.job_id = files, files.job_id
        self.batch, self._remote = batch, remote
        self.start_timeout = start_timeout
        self.record, self.notify = record, notify
        self.alert = alert  # what deserves the desktop too (the walltime warning)
        self.policy = policy or PollPolicy()
        self.clock = clock or Clock()

    # ---- the scheduler and the job's files ---------------------------------------------------

    def status(self, remote: Remote | None = None) -> JobStatus | None:
        """One scheduler query for this job (recorded); None if the scheduler does not know it."""
        status = self.batch.statuses([self.job_id], remote).get(self.job_id)
        if status is not None:
            self.record(status)
        return status

    def ended_error(self, status: JobStatus | None, why: str) -> JobEnded:
        """JobEnded with the scheduler's word for it, its exit code and reason, and the log's tail."""
        state = status.state.value if status else "ended"
        detail = f" (exit code {status.exit_code})" if status and status.exit_code else ""
        message = f"job {self.job_id} {why}: {state}{detail}"
        if status and status.reason and status.state.is_final:
            message += f", {status.reason}"
        if status and _exit_number(status.exit_code) == SESSION_DIR_EXIT:
            message += (f"; it could not create ~/{self.files.folder} on the cluster (is your home "
                        "full or over its quota? see `quota` or your site's disk usage command)")
        tail = hs.log_tail(self._remote(), self.files)
        if tail:
            message += "\nlast lines of its output:\n" + tail
        return JobEnded(message, hint=None if tail else logs_hint(self.job_id, self.batch.cluster))

    # ---- waiting for the notebook ------------------------------------------------------------

    def _ended(self, remote: Remote, stale: bytes | None) -> int | bool | None:
        """hs.read_ended, but a requeued job's old `ended` file (stale) counts as none."""
        data = self._ended_bytes(remote)
        return False if data is None or data == stale else hs.parse_ended(data)

    def wait_ready(self, on_event: Callable[[WaitEvent], None] = _ignore, *,
                   stale: tuple[str, bytes | None] | None = None) -> hs.Handshake:
        """Until the job's notebook answers: its handshake. JobEnded if the job ends first,
        StartTimeout if it runs but its notebook never becomes ready, JobNotFound if the scheduler
        stops knowing it. stale: after a requeue, the old run's token and `ended` file, which the
        new run removes when it starts: until then they are not this run's."""
        stale_token, stale_ended = stale if stale is not None else (None, None)
        p, clock = self.policy, self.clock
        started = clock.monotonic()
        next_query, polls, misses = started, 0, 0
        status: JobStatus | None = None
        running_since: float | None = None
        ended_asked = False  # the scheduler was asked (once, at once) why the notebook ended
        ended: int | bool | None = False
        while True:
            now = clock.monotonic()
            # Until the scheduler says the job runs, its files are read only as often as the
            # scheduler is asked (the shared file system of a busy cluster is not polled more
            # than its controller); once it runs, often: the notebook is about to answer.
            if running_since is not None or now >= next_query:
                # `ended` first: a stopped notebook leaves its connection.json behind.
                ended = self._ended(self._remote(), stale_ended)
                found = hs.read_handshake(self._remote(), self.files) if ended is False else None
                if found is not None and found.token == stale_token:
                    found = None
                if found:
                    on_event(WaitEvent("ready", status, now - started))
                    self.record(replace(status, state=JobState.RUNNING, raw_state="RUNNING") if status
                                else JobStatus(self.job_id, JobState.RUNNING, "RUNNING"))
                    return found
                if ended == START_TIMEOUT_EXIT:
                    raise StartTimeout(
                        f"job {self.job_id}: Jupyter did not answer within {self.start_timeout} s of "
                        "starting; the job has stopped", hint=logs_hint(self.job_id, self.batch.cluster))
            if now >= next_query or (ended is not False and not ended_asked):
                ended_asked = ended is not False
                status = self.status()
                misses = misses + 1 if status is None else 0
                self._check_waiting(status, ended, misses)
                if status is not None and status.state is JobState.RUNNING and running_since is None:
                    running_since = now
                on_event(WaitEvent(_phase(status), status, now - started))
                next_query = now + p.queue_backoff[min(polls, len(p.queue_backoff) - 1)]
                polls += 1
            if running_since is not None and now - running_since > self.start_timeout + p.start_grace:
                raise StartTimeout(
                    f"job {self.job_id} runs but its notebook did not answer within "
                    f"{self.start_timeout} s",
                    hint=f"the job still runs: `{logs_hint(self.job_id, self.batch.cluster)}`, "
                         f"`hpcnb cancel {self.job_id} --cluster {self.batch.cluster}`")
            clock.sleep(p.files_running if running_since is not None else
                        min(p.files_queued, max(0.0, next_query - clock.monotonic())))

    def _check_waiting(self, status: JobStatus | None, ended: int | bool | None, misses: int) -> None:
        """Raise if what the scheduler and the `ended` file say means the notebook will not come."""
        before = "stopped its notebook before it was ready"
        if status is None and ended is not False:
            raise self.ended_error(None, before)
        if status is None and misses >= self.policy.misses:
            raise JobNotFound(f"job {self.job_id} is not known to the {self.batch.scheduler.name} "
                              "scheduler")
        if status is None:
            return
        if status.state.is_final:
            raise self.ended_error(status, "ended before the notebook was ready")
        if ended is not False and status.state is not JobState.UNKNOWN:
            raise self.ended_error(status, before)

    # ---- while attached ------------------------------------------------------------------------

    def watch_attached(self, stop: threading.Event, remote: Callable[[], Remote | None], *,
                       walltime_end: float | None, warn_before: int) -> None:
        """Until `stop` is set (returns) or the job's notebook ends (JobEnded). `remote()` is the
        connection to read over (the tunnel's own; None while it reconnects). Warns once,
        `warn_before` seconds before the walltime ends (the job's own end time, wall clock)."""
        p, clock = self.policy, self.clock
        warned = False
        next_status = clock.monotonic() + p.attached_status
        # The wall clock is read once, here: a clock step later (NTP, a date change) or the
        # laptop's sleep moves neither the time left nor the warning (Clock.monotonic).
        deadline = clock.monotonic() + (walltime_end - clock.time()) if walltime_end else None
        while not clock.wait(stop, p.attached_files):
            conn = remote()
            if conn is None:
                continue  # reconnecting; the tunnel says so
            ended: int | bool | None = False
            status = None
            try:
                ended = hs.read_ended(conn, self.files)
                if ended is not False or clock.monotonic() >= next_status:
                    next_status = clock.monotonic() + p.attached_status
                    status = self.status(conn)
                if ended is not False or (status is not None and status.state is JobState.PENDING):
                    self._raise_if_requeued(conn, status)
            except HpcnbError as exc:  # a dropped connection, a failed query: say so, look again
                if isinstance(exc, JobRequeued):
                    raise
                self.notify(f"could not check the job: {exc}")
                if ended is False:
                    continue  # the `ended` file wins even when the scheduler cannot say why
            if ended is not False or (status is not None and status.state.is_final):
                if status is not None and status.state.is_final:
                    # The scheduler's word for it (NODE_FAIL, a preemption ...), its reason and
                    # exit code, and the job's last output, as before the notebook was ready.
                    raise self.ended_error(status, "has ended")
                state = status.state.value if status and status.state.is_final else "ended"
                raise JobEnded(f"job {self.job_id} has ended ({state}); its notebook is gone",
                               hint=logs_hint(self.job_id, self.batch.cluster))
            left = deadline - clock.monotonic() if deadline is not None else None
            if left is not None and not warned and left <= warn_before:
                warned = True
                warning = (f"job {self.job_id} reaches its time limit in {max(0, int(left // 60))} "
                           "min; save your work")
                self.notify(warning)
                self.alert(warning)

    def _raise_if_requeued(self, conn: Remote, status: JobStatus | None) -> None:
        """The notebook stopped (or the job is queued again) while the scheduler keeps the job:
        requeued (Slurm's REQUEUED/PENDING, PBS's Q after qrerun), or already started again (its
        new run removed the old `ended` file). A job still shown running or completing may be on
        its way to either, so the scheduler is asked again for a few seconds; a job that ends is
        left to the caller."""
        stale = self._ended_bytes(conn)
        for _ in range(REQUEUE_CHECKS):
            if status is not None and (status.state.is_final or status.state is JobState.UNKNOWN):
                return
            again = status is not None and status.state in (JobState.PENDING, JobState.HELD)
            if again or (stale is not None and self._ended_bytes(conn) is None):
                why = (status.reason or status.raw_state) if status is not None and again else "run again"
                raise JobRequeued(f"job {self.job_id} was put back in the queue by the scheduler "
                                  f"({why}); its notebook will start again", stale_ended=stale)
            self.clock.sleep(self.policy.requeue_pause)
            status = self.status(conn)

    def _ended_bytes(self, conn: Remote) -> bytes | None:
        try:
            return conn.read_file(self.files.ended)
        except FileNotFoundError:
            return None

    # ---- logs -f and cancel --------------------------------------------------------------------

    def follow_log(self) -> Iterator[bytes]:
        """job.log as it grows, until the job's notebook ends (or the scheduler says the job has,
        for a job killed before it could write `ended`)."""
        p, clock = self.policy, self.clock
        offset = 0
        next_status = clock.monotonic() + p.follow_status
        while True:
            data = hs.read_log(self._remote(), self.files) or b""
            if len(data) > offset:
                yield data[offset:]
                offset = len(data)
            if hs.read_ended(self._remote(), self.files) is not False:
                return
            if clock.monotonic() >= next_status:
                next_status = clock.monotonic() + p.follow_status
                status = self.status()
                if status is None or status.state.is_final:
                    return
            clock.sleep(p.follow_files)

    def wait_final(self, last: JobStatus) -> JobStatus:
        """After our own cancel: the job's status once the scheduler shows it ended, or the last one
        seen when that takes longer than the policy's cancel_wait. A job that neither the queue nor
        the history knows any more, twice in a row, was removed by that cancel: Grid Engine keeps
        no record of a job deleted before it ran (qacct never has it), so it is CANCELLED."""
        p, clock = self.policy, self.clock
        deadline = clock.monotonic() + p.cancel_wait
        delay, largest = p.cancel_backoff
        status, unknown = last, 0
        while clock.monotonic() < deadline:
            clock.sleep(delay)
            delay = min(delay * 2, largest)
            found = self.status()
            unknown = 0 if found is not None else unknown + 1
            if unknown == 2 and not status.state.is_final:
                status = replace(status, state=JobState.CANCELLED, raw_state="gone after cancel",
                                 node=None, time_left_s=None)
                self.record(status)
                break
            status = found or status
            if status.state.is_final:
                break
        return status
