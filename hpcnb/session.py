"""The flow of a session: render -> submit -> wait for the handshake; list, cancel, logs.

Attaching (the tunnel and holding it) is in attach.py. Everything here talks to the cluster through
Context (one connection per command) and records what it learns in the local Store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hpcnb import handshake as hs
from hpcnb.context import Context
from hpcnb.errors import HpcnbError, JobEnded, JobNotFound, StartTimeout
from hpcnb.request import JobRequest
from hpcnb.schedulers import JobState, JobStatus
from hpcnb.store import SessionRecord, Store

# While a job is queued, ask the scheduler after 5, 10, 20, then every 30 s: each squeue/qstat is
# an RPC to a controller that the whole cluster shares (DESIGN.md, "Scheduler etiquette").
QUEUE_POLL = (5.0, 10.0, 20.0, 30.0)
# Once it runs, the handshake file (a file read, not a scheduler query) is what we watch closely.
HANDSHAKE_POLL_RUNNING = 0.25
HANDSHAKE_POLL_QUEUED = 2.0
FOLLOW_STATUS_INTERVAL = 30.0
LOG_TAIL_LINES = 15
# The launcher's exit code when Jupyter never answered within start_timeout (templates/launcher.py).
START_TIMEOUT_EXIT = 124


@dataclass(frozen=True)
class Progress:
    """What `submit` is waiting for, for the CLI to show."""

    phase: str  # "queued", "starting", "unknown", "ready"
    status: JobStatus | None
    elapsed: float


def submit(ctx: Context, store: Store, request: JobRequest, script: str) -> str:
    """Submit the job script (given on the submit command's stdin); record the session.

    Returns the job id. One command on the login host, no file left behind.
    """
    result = ctx.run_checked(ctx.scheduler.submit_argv(), "the scheduler refused the job", stdin=script)
    try:
        job_id = ctx.scheduler.parse_job_id(result.stdout)
    except ValueError as exc:
        raise HpcnbError(f"could not read a job id from `{' '.join(result.argv)}`: {exc}") from exc
    # A job id can come round again: an older job's handshake must not be read as this one's
    # while it is queued. (The job also removes them when it starts.)
    ctx.remote.run(["rm", "-f", hs.connection_path(job_id), hs.ended_path(job_id)])
    now = time.time()
    store.add(SessionRecord(
        cluster=ctx.cfg.name, job_id=job_id, name=request.name, scheduler=ctx.cfg.scheduler,
        partition=request.partition, tunnel=ctx.cfg.tunnel, submitted_at=now, state="pending",
        node=None, time_left_s=request.walltime_seconds, updated_at=now,
    ))
    return job_id


def read_handshake(ctx: Context, job_id: str, remote=None) -> hs.Handshake | None:
    try:
        data = (remote or ctx.remote).read_file(hs.connection_path(job_id))
    except FileNotFoundError:
        return None
    return hs.parse_handshake(data, job_id)


def read_ended(ctx: Context, job_id: str, remote=None) -> int | bool | None:
    """False while the job's notebook runs; else the exit code it recorded (or None)."""
    try:
        return hs.parse_ended((remote or ctx.remote).read_file(hs.ended_path(job_id)))
    except FileNotFoundError:
        return False


def log_tail(ctx: Context, job_id: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = ctx.remote.read_file(hs.log_path(job_id)).decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def job_ended_error(ctx: Context, job_id: str, status: JobStatus | None, why: str) -> JobEnded:
    state = status.state.value if status else "ended"
    detail = f" (exit code {status.exit_code})" if status and status.exit_code else ""
    tail = log_tail(ctx, job_id)
    message = f"job {job_id} {why}: {state}{detail}"
    if status and status.reason and status.state.is_final:
        message += f", {status.reason}"
    if tail:
        message += "\nlast lines of its output:\n" + tail
    return JobEnded(message, hint=None if tail else f"hpcnb logs {job_id} --cluster {ctx.cfg.name}")


def record_status(store: Store, cluster: str, status: JobStatus) -> None:
    store.update_status(cluster, status.job_id, state=status.state.value, node=status.node,
                        time_left_s=status.time_left_s)


def wait_until_ready(ctx: Context, store: Store, job_id: str, *,
                     on_progress: Callable[[Progress], None] = lambda p: None,
                     sleep: Callable[[float], None] = time.sleep) -> hs.Handshake:
    """Wait until the job's notebook answers; JobEnded if the job ends first, StartTimeout if
    it runs but its notebook never becomes ready."""
    started = time.monotonic()
    next_query, polls, misses = started, 0, 0
    status: JobStatus | None = None
    running_since: float | None = None
    while True:
        now = time.monotonic()
        found = read_handshake(ctx, job_id)
        if found:
            on_progress(Progress("ready", status, now - started))
            store.update_status(ctx.cfg.name, job_id, state=JobState.RUNNING.value,
                                node=status.node if status else None)
            return found
        ended = read_ended(ctx, job_id)
        if ended == START_TIMEOUT_EXIT:
            raise StartTimeout(
                f"job {job_id}: Jupyter did not answer within {ctx.cfg.start_timeout} s of starting; "
                "the job has stopped",
                hint=f"hpcnb logs {job_id} --cluster {ctx.cfg.name}",
            )
        if now >= next_query or ended is not False:
            status = ctx.statuses([job_id]).get(job_id)
            misses = misses + 1 if status is None else 0
            if status is None and ended is not False:
                raise job_ended_error(ctx, job_id, None, "stopped its notebook before it was ready")
            if status is None and misses >= 3:
                raise JobNotFound(f"job {job_id} is not known to the {ctx.scheduler.name} scheduler")
            if status is not None:
                record_status(store, ctx.cfg.name, status)
                if status.state.is_final:
                    raise job_ended_error(ctx, job_id, status, "ended before the notebook was ready")
                if ended is not False and status.state is not JobState.UNKNOWN:
                    raise job_ended_error(ctx, job_id, status, "stopped its notebook before it was ready")
                if status.state is JobState.RUNNING and running_since is None:
                    running_since = now
            phase = _phase(status)
            on_progress(Progress(phase, status, now - started))
            interval = QUEUE_POLL[min(polls, len(QUEUE_POLL) - 1)]
            polls += 1
            next_query = now + interval
        if running_since is not None and now - running_since > ctx.cfg.start_timeout + 30:
            raise StartTimeout(
                f"job {job_id} runs but its notebook did not answer within {ctx.cfg.start_timeout} s",
                hint=f"the job still runs: `hpcnb logs {job_id}`, `hpcnb cancel {job_id}`",
            )
        sleep(HANDSHAKE_POLL_RUNNING if running_since is not None else HANDSHAKE_POLL_QUEUED)


def _phase(status: JobStatus | None) -> str:
    if status is None:
        return "queued"
    if status.state is JobState.RUNNING:
        return "starting"
    if status.state is JobState.UNKNOWN:
        return "unknown"
    return "queued"


def refresh(ctx: Context, store: Store, *, include_ended: bool) -> list[SessionRecord]:
    """The cluster's sessions, with one scheduler query for all those still active."""
    active = store.active_job_ids(ctx.cfg.name)
    if active:
        statuses = ctx.statuses(active)
        for job_id in active:
            status = statuses.get(job_id)
            if status is not None:
                record_status(store, ctx.cfg.name, status)
            else:
                # Neither the queue nor the history knows it: it ended long ago.
                store.update_status(ctx.cfg.name, job_id, state="ended", time_left_s=None,
                                    ended_at=time.time())
    return store.list(ctx.cfg.name, include_ended=include_ended)


def check_cluster(ctx: Context, store: Store, job_id: str) -> None:
    """A job recorded under another cluster only: say so instead of asking the wrong scheduler."""
    hs.check_job_id(job_id)
    if store.get(ctx.cfg.name, job_id) is not None:
        return
    others = [r.cluster for r in store.list() if r.job_id == job_id and r.cluster != ctx.cfg.name]
    if others:
        raise JobNotFound(
            f"job {job_id} is a session of cluster {others[0]!r}, not {ctx.cfg.name!r}",
            hint=f"add --cluster {others[0]}",
        )


def known_status(ctx: Context, store: Store, job_id: str) -> JobStatus:
    """The job's status; JobNotFound if neither this cluster's scheduler nor its history knows it."""
    check_cluster(ctx, store, job_id)
    status = ctx.statuses([job_id]).get(job_id)
    if status is None:
        raise JobNotFound(f"no job {job_id} on cluster {ctx.cfg.name!r}",
                          hint="`hpcnb list --all` shows the sessions this laptop knows")
    if store.get(ctx.cfg.name, job_id) is not None:
        record_status(store, ctx.cfg.name, status)
    return status


def cancel(ctx: Context, store: Store, job_id: str, *, wait: float = 15.0,
           sleep: Callable[[float], None] = time.sleep) -> JobStatus:
    """Cancel the job and wait (briefly) until the scheduler shows it ended."""
    status = known_status(ctx, store, job_id)
    if status.state.is_final:
        return status
    result = ctx.remote.run(ctx.scheduler.cancel_argv(job_id))
    if result.exit_status != 0:
        if ctx.scheduler.is_unknown_job_error(result.stderr, result.exit_status):
            raise JobNotFound(f"no job {job_id} on cluster {ctx.cfg.name!r}")
        raise ctx.command_error(result, f"could not cancel job {job_id}")
    deadline = time.monotonic() + wait
    delay = 0.5
    while time.monotonic() < deadline:
        sleep(delay)
        delay = min(delay * 2, 4.0)
        status = ctx.statuses([job_id]).get(job_id, status)
        if status.state.is_final:
            break
    if store.get(ctx.cfg.name, job_id) is not None:
        record_status(store, ctx.cfg.name, status)
    return status


def logs(ctx: Context, store: Store, job_id: str, *, follow: bool = False,
         sleep: Callable[[float], None] = time.sleep) -> Iterator[bytes]:
    """The job's output; with follow, new output as it comes until the job's notebook ends."""
    check_cluster(ctx, store, job_id)
    offset = 0
    next_status = time.monotonic() + FOLLOW_STATUS_INTERVAL
    while True:
        try:
            data = ctx.remote.read_file(hs.log_path(job_id))
        except FileNotFoundError:
            data = b""
            if offset == 0 and not follow:
                status = known_status(ctx, store, job_id)
                raise HpcnbError(f"job {job_id} has no output yet ({status.state.value})") from None
        if len(data) > offset:
            yield data[offset:]
            offset = len(data)
        if not follow or read_ended(ctx, job_id) is not False:
            return
        if time.monotonic() >= next_status:
            # A job killed before its notebook could write `ended` (or one still queued and then
            # cancelled) is seen by the scheduler only.
            next_status = time.monotonic() + FOLLOW_STATUS_INTERVAL
            status = ctx.statuses([job_id]).get(job_id)
            if status is None or status.state.is_final:
                return
        sleep(1.0)
