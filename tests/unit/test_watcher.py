"""JobWatcher (hpcnb.watcher) over a FakeRemote and a FakeClock: every wait of hpcnb on a job, with
the scheduler's real (captured) output, in virtual time. How often the scheduler and the job's
files are asked is asserted to the virtual second."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from fakes import (
    SLURM_CONTROLLER_DOWN,
    FakeClock,
    FakeRemote,
    captured_record,
    sacct_line,
)

from hpcnb import handshake as hs
from hpcnb.batch import BatchSystem
from hpcnb.errors import CommandError, JobEnded, JobNotFound, StartTimeout
from hpcnb.remote import Remote
from hpcnb.schedulers import JobState, JobStatus, Scheduler
from hpcnb.schedulers.pbs import PBSScheduler
from hpcnb.schedulers.slurm import SlurmScheduler
from hpcnb.watcher import JobWatcher, PollPolicy, WaitEvent

JOB = "4"
START_TIMEOUT = 60
# Job 4 of the testbed capture waits (BeginTime); job 3 runs on node01: replayed as job 4.
PENDING = captured_record("slurm_squeue_22.05.txt", "4")
RUNNING = captured_record("slurm_squeue_22.05.txt", "3", as_id=JOB)
COMPLETED = captured_record("slurm_squeue_ended_22.05.txt", "1", as_id=JOB)
CANCELLED = captured_record("slurm_squeue_22.05.txt", "6", as_id=JOB)
SACCT_CANCELLED = captured_record("slurm_sacct_22.05.txt", "6", as_id=JOB)
SACCT_FAILED = captured_record("slurm_sacct_22.05.txt", "2")  # job 2: FAILED, ExitCode 3:0
SQUEUE_FAILED = captured_record("slurm_squeue_22.05.txt", "2")  # job 2: FAILED, NonZeroExitCode
COMPLETING = captured_record("slurm_squeue_states_doc.txt", "1004", as_id=JOB)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeRemote:
    return FakeRemote(clock)


@dataclass
class Watch:
    """A JobWatcher and everything it reported."""

    watcher: JobWatcher
    clock: FakeClock
    events: list[WaitEvent] = field(default_factory=list)
    records: list[JobStatus] = field(default_factory=list)
    notes: list[tuple[float, str]] = field(default_factory=list)  # (virtual time, message)
    batch_notes: list[str] = field(default_factory=list)

    def phases(self) -> list[tuple[str, float]]:
        return [(e.phase, e.elapsed) for e in self.events]


def watch(fake: FakeRemote, job_id: str = JOB, *, scheduler: Scheduler | None = None,
          policy: PollPolicy | None = None, start_timeout: int = START_TIMEOUT) -> Watch:
    """A JobWatcher over `fake` as the brief's cluster "tb" has it, reporting into a Watch."""
    records: list[JobStatus] = []
    notes: list[tuple[float, str]] = []
    batch_notes: list[str] = []
    batch = BatchSystem(scheduler or SlurmScheduler(), lambda: fake, cluster="tb",
                        notify=batch_notes.append)
    watcher = JobWatcher(hs.JobFiles("tb", job_id), batch, lambda: fake, start_timeout=start_timeout,
                         record=records.append, notify=lambda m: notes.append((fake.clock.now, m)),
                         policy=policy, clock=fake.clock)
    return Watch(watcher, fake.clock, records=records, notes=notes, batch_notes=batch_notes)


def steps(start: float, stop: float, step: float) -> list[float]:
    """start, start+step, ... up to and including stop."""
    n = round((stop - start) / step)
    return [start + i * step for i in range(n + 1)]


def test_fakes_follow_the_remote_protocol(fake: FakeRemote) -> None:
    assert isinstance(fake, Remote)
    with pytest.raises(FileNotFoundError):
        fake.read_file(hs.JobFiles("tb", JOB).connection)


# ---- wait_ready ----------------------------------------------------------------------------------


@pytest.fixture
def queued_then_running(fake: FakeRemote) -> FakeRemote:
    """PENDING (BeginTime) until t=12, then RUNNING on node01; Jupyter answers at t=20."""
    fake.job("squeue", JOB, PENDING)
    fake.job("squeue", JOB, RUNNING, at=12)
    fake.handshake(JOB, at=20, token="tok-ready")
    return fake


def test_wait_ready_queued_starting_ready(queued_then_running: FakeRemote) -> None:
    w = watch(queued_then_running)
    found = w.watcher.wait_ready(w.events.append)

    assert (found.job_id, found.token, found.node, found.host, found.port) == (
        JOB, "tok-ready", "node01", "10.0.0.11", 8888)
    assert w.clock.now == 20
    assert w.phases() == [("queued", 0), ("queued", 2), ("starting", 15), ("ready", 20)]
    queued, _, starting, ready = w.events
    assert queued.status is not None and queued.status.reason == "BeginTime"
    assert queued.status.expected_start == "2026-11-26T00:19:07"
    assert starting.status is not None and starting.status.node == "node01"
    assert ready.status is starting.status
    # Every status learned is recorded, and "ready" is recorded as running on the node.
    assert [r.state for r in w.records] == [JobState.PENDING] * 2 + [JobState.RUNNING] * 2
    assert w.records[-1].node == "node01"


def test_wait_ready_reads_files_no_more_often_than_it_asks_the_scheduler_while_queued(
        queued_then_running: FakeRemote) -> None:
    fake = queued_then_running
    watch(fake).watcher.wait_ready()

    assert fake.times("squeue") == [0, 2, 15]
    assert fake.calls_to("squeue")[0].argv == tuple(SlurmScheduler().status_argv([JOB], None))
    assert fake.times("sacct") == []  # squeue knew the job each time
    # connection.json: with each query while queued (issue 15: the shared file system is not
    # polled more than the controller), every 0.25 s once the job runs (from t=15).
    polls = [0, 2, 15, *steps(15.25, 20, 0.25)]
    assert fake.read_times(hs.JobFiles("tb", JOB).connection) == polls
    assert fake.read_times(hs.JobFiles("tb", JOB).ended) in (polls, polls[:-1])  # the same polls
    assert max(fake.clock.pauses) <= 2.0  # a Ctrl-C is still seen within 2 s


@pytest.mark.parametrize(("policy", "times"), [
    # The scheduler is due after 2, 13, 20, then every 30 s, and asked when due (the pauses
    # between are at most files_queued long, whatever it is).
    (PollPolicy(), [0, 2, 15, 35, 65, 95, 125]),
    (PollPolicy(files_queued=1.0), [0, 2, 15, 35, 65, 95, 125]),
], ids=["files-every-2s", "files-every-1s"])
def test_queue_backoff(fake: FakeRemote, policy: PollPolicy, times: list[float]) -> None:
    fake.job("squeue", JOB, PENDING)
    fake.handshake(JOB, at=130)
    w = watch(fake, policy=policy)
    w.watcher.wait_ready(w.events.append)

    assert fake.times("squeue") == times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= due for gap, due in zip(gaps, [2, 13, 20, 30, 30, 30], strict=True))
    assert {e.phase for e in w.events} == {"queued", "ready"}


def test_controller_down_is_unknown_and_the_wait_goes_on(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, PENDING)
    fake.fail("squeue", stderr=SLURM_CONTROLLER_DOWN, exit_status=1, start=2, end=50)
    fake.job("squeue", JOB, RUNNING, at=50)
    fake.handshake(JOB, at=70)
    w = watch(fake)
    found = w.watcher.wait_ready(w.events.append)

    assert found.job_id == JOB
    assert w.phases() == [("queued", 0), ("unknown", 2), ("unknown", 15), ("unknown", 35),
                          ("starting", 65), ("ready", 70)]
    unknown = w.events[1].status
    assert unknown is not None and unknown.state is JobState.UNKNOWN
    assert unknown.reason == "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    assert [r.state for r in w.records].count(JobState.UNKNOWN) == 3
    assert w.batch_notes == ["the slurm controller does not answer; will keep trying"] * 3
    # A controller that does not answer is not asked about the job's history either.
    assert fake.times("squeue") == [0, 2, 15, 35, 65]
    assert fake.times("sacct") == [] and not w.notes


@pytest.mark.parametrize(("known", "times"), [
    (None, [0, 2, 15]),  # never known: gone after three queries
    ((2, 7), [0, 2, 15, 35, 65]),  # known once in between: three in a row counted from there
], ids=["never-known", "known-once"])
def test_job_unknown_three_times_in_a_row_is_not_found(fake: FakeRemote, known: tuple[float, float] | None,
                                                        times: list[float]) -> None:
    if known:
        fake.job("squeue", JOB, PENDING, at=known[0])
        fake.job("squeue", JOB, None, at=known[1])
    w = watch(fake)
    with pytest.raises(JobNotFound, match="job 4 is not known to the slurm scheduler"):
        w.watcher.wait_ready(w.events.append)

    assert fake.times("squeue") == times
    # Only a miss in the queue asks the history (sacct).
    assert fake.times("sacct") == [t for t in times if not (known and known[0] <= t < known[1])]
    assert w.clock.now == times[-1]
    assert all(e.phase == "queued" for e in w.events)


LOG = "".join(f"line {i}\n" for i in range(1, 21))


def test_job_failed_before_ready_says_state_exit_code_and_log_tail(fake: FakeRemote) -> None:
    job = "2"
    fake.job("squeue", job, captured_record("slurm_squeue_22.05.txt", "4", as_id=job))
    fake.job("squeue", job, None, at=10)  # gone from slurmctld's memory ...
    fake.job("sacct", job, SACCT_FAILED, at=10)  # ... but accounting has it
    fake.log(job, LOG, at=9)
    w = watch(fake, job)
    with pytest.raises(JobEnded) as info:
        w.watcher.wait_ready(w.events.append)

    message = info.value.message
    assert message.startswith("job 2 ended before the notebook was ready: failed (exit code 3:0)\n")
    assert message.endswith("last lines of its output:\n" + "\n".join(f"line {i}" for i in range(6, 21)))
    assert "line 5\n" not in message
    assert info.value.hint is None  # the log's tail is in the message already
    assert w.clock.now == 15 and fake.times("sacct") == [15]
    assert w.records[-1].state is JobState.FAILED


def test_job_failed_in_squeue_without_a_log_points_at_logs(fake: FakeRemote) -> None:
    job = "2"
    fake.job("squeue", job, SQUEUE_FAILED)
    w = watch(fake, job)
    with pytest.raises(JobEnded) as info:
        w.watcher.wait_ready()

    assert info.value.message == "job 2 ended before the notebook was ready: failed, NonZeroExitCode"
    assert info.value.hint == "hpcnb logs 2 --cluster tb"
    # squeue prints no exit code: accounting is asked for it (here it has no record yet).
    assert fake.times("sacct") == [0] and w.clock.now == 0


def test_job_failed_in_squeue_gets_its_exit_code_from_accounting(fake: FakeRemote) -> None:
    job = "2"
    fake.job("squeue", job, SQUEUE_FAILED)
    fake.job("sacct", job, SACCT_FAILED)
    w = watch(fake, job)
    with pytest.raises(JobEnded) as info:
        w.watcher.wait_ready()

    assert info.value.message.startswith("job 2 ended before the notebook was ready: failed (exit code 3:0)")


def test_ended_file_with_exit_124_is_start_timeout(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, RUNNING)
    fake.ended(JOB, 124, at=30, reason="Jupyter did not answer within 60 s (HPCNB_START_TIMEOUT)")
    w = watch(fake)
    with pytest.raises(StartTimeout) as info:
        w.watcher.wait_ready()

    assert "did not answer within 60 s" in info.value.message
    assert info.value.hint == "hpcnb logs 4 --cluster tb"
    assert w.clock.now == 30
    # Running from t=0: files every 0.25 s, the scheduler after 5, 10, 20 s; not again for the file.
    assert fake.times("squeue") == [0, 2, 15]


def test_ended_file_before_ready_asks_the_scheduler_at_once(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, RUNNING)
    fake.ended(JOB, 1, at=7.3, reason="Jupyter exited with code 1 before it was ready (see above)")
    fake.log(JOB, "hpcnb-launcher: Jupyter exited with code 1 before it was ready (see above)\n")
    w = watch(fake)
    with pytest.raises(JobEnded) as info:
        w.watcher.wait_ready()

    assert fake.times("squeue") == [0, 2, 7.5]  # 7.5: the first poll that saw `ended`
    assert info.value.message.startswith("job 4 stopped its notebook before it was ready: running")
    assert "Jupyter exited with code 1" in info.value.message


def test_running_without_handshake_gives_up_after_start_timeout_and_grace(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, RUNNING)
    w = watch(fake)
    with pytest.raises(StartTimeout) as info:
        w.watcher.wait_ready(w.events.append)

    assert w.clock.now == START_TIMEOUT + 30 + 0.25  # the first poll past start_timeout + 30 s
    assert info.value.message == "job 4 runs but its notebook did not answer within 60 s"
    hint = info.value.hint or ""
    assert "`hpcnb logs 4 --cluster tb`" in hint and "`hpcnb cancel 4 --cluster tb`" in hint
    assert fake.times("squeue") == [0, 2, 15, 35, 65]
    assert {e.phase for e in w.events} == {"starting"}


def test_handshake_of_a_notebook_that_ended_is_not_ready(fake: FakeRemote) -> None:
    # Jupyter was shut down: the launcher wrote `ended` and the job is completing.
    fake.job("squeue", JOB, COMPLETING)
    fake.handshake(JOB)
    fake.ended(JOB, 0)
    with pytest.raises(JobEnded):
        watch(fake).watcher.wait_ready()


def test_ended_file_with_controller_down_does_not_hammer_the_controller(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, RUNNING)
    fake.fail("squeue", stderr=SLURM_CONTROLLER_DOWN, exit_status=1, start=3, end=40)
    fake.ended(JOB, 1, at=10)
    with pytest.raises(JobEnded):
        watch(fake).watcher.wait_ready()
    asked_while_down = [t for t in fake.times("squeue") if 10 <= t < 40]
    assert len(asked_while_down) <= 4


@pytest.mark.parametrize(("capture", "queued", "running", "job", "reason"), [
    ("pbspro_qstat_f_doc.txt", "1235.pbsserver", "1234.pbsserver", "1234.pbsserver",
     "Not Running: Insufficient amount of resource: ngpus (R: 1 A: 0 T: 4)"),
    ("torque_wrapper_qstat_f_22.05.txt", "4", "1", "4", None),
], ids=["pbspro", "slurm-torque-wrapper"])
def test_wait_ready_pbs(fake: FakeRemote, capture: str, queued: str, running: str, job: str,
                        reason: str | None) -> None:
    fake.job("qstat", job, captured_record(capture, queued, as_id=job))
    fake.job("qstat", job, captured_record(capture, running, as_id=job), at=12)
    fake.handshake(job, at=20)
    w = watch(fake, job, scheduler=PBSScheduler())
    found = w.watcher.wait_ready(w.events.append)

    assert found.job_id == job
    assert w.phases() == [("queued", 0), ("queued", 2), ("starting", 15), ("ready", 20)]
    assert w.events[0].status is not None and w.events[0].status.reason == reason
    assert w.events[2].status is not None and w.events[2].status.node == "node01"
    assert fake.times("qstat") == [0, 2, 15]
    assert {c.argv for c in fake.calls} == {("qstat", "-f", job)}  # no history query needed


# ---- watch_attached ------------------------------------------------------------------------------


def attach(w: Watch, fake: FakeRemote, stop_at: float | None, *, walltime_end: float | None = None,
           warn_before: int = 600, remote: Callable[[], Remote | None] | None = None) -> None:
    """watch_attached over `remote` (default: `fake`), with `stop` set at virtual time `stop_at`."""
    stop = threading.Event()
    if stop_at is not None:
        w.clock.at(stop_at, stop.set)
    w.watcher.watch_attached(stop, remote or (lambda: fake), walltime_end=walltime_end,
                             warn_before=warn_before)


def test_watch_attached_returns_when_stop_is_set(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, RUNNING)
    w = watch(fake)
    attach(w, fake, stop_at=42)

    assert w.clock.now == 42  # the wait ends when `stop` is set, not at the next 5 s
    assert fake.read_times(hs.JobFiles("tb", JOB).ended) == steps(5, 40, 5)
    assert fake.times("squeue") == [] and not w.notes


def test_watch_attached_asks_the_scheduler_every_60_s(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, RUNNING)
    w = watch(fake)
    attach(w, fake, stop_at=300)

    assert fake.times("squeue") == [60, 120, 180, 240]
    assert len(fake.read_times(hs.JobFiles("tb", JOB).ended)) == 59  # every 5 s
    assert [r.state for r in w.records] == [JobState.RUNNING] * 4


def test_watch_attached_ended_file_raises_and_asks_the_scheduler_at_once(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, RUNNING)
    fake.job("squeue", JOB, COMPLETED, at=124)
    fake.ended(JOB, 0, at=123)
    w = watch(fake)
    with pytest.raises(JobEnded) as info:
        attach(w, fake, stop_at=None)

    assert fake.times("squeue") == [60, 120, 125]
    assert info.value.message == "job 4 has ended: completed"
    assert info.value.hint == "hpcnb logs 4 --cluster tb"


def test_watch_attached_ends_when_the_scheduler_says_final(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, RUNNING)
    fake.job("squeue", JOB, CANCELLED, at=100)  # killed too hard to write `ended`
    w = watch(fake)
    with pytest.raises(JobEnded, match=r"job 4 has ended: cancelled"):
        attach(w, fake, stop_at=None)
    assert w.clock.now == 120


def test_watch_attached_warns_once_before_the_walltime_ends(fake: FakeRemote, clock: FakeClock) -> None:
    fake.job("squeue", JOB, RUNNING)
    w = watch(fake)
    attach(w, fake, stop_at=700, walltime_end=clock.time() + 1000, warn_before=600)

    assert w.notes == [(400, "job 4 reaches its time limit in 10 min; save your work")]


def test_watch_attached_skips_rounds_while_reconnecting(fake: FakeRemote, clock: FakeClock) -> None:
    tunnel_conn = FakeRemote(clock)  # the tunnel's own connection to the login host
    tunnel_conn.job("squeue", JOB, RUNNING)
    w = watch(fake)
    attach(w, fake, stop_at=140,
           remote=lambda: None if 50 <= clock.now <= 70 else tunnel_conn)

    assert tunnel_conn.times("squeue") == [75, 135]  # the round due at 60 waited for the connection
    assert tunnel_conn.read_times(hs.JobFiles("tb", JOB).ended) == steps(5, 45, 5) + steps(75, 135, 5)
    assert fake.calls == [] and fake.reads == []  # nothing over the watcher's own connection


def test_watch_attached_failed_query_is_said_and_retried(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, RUNNING)
    timeout = CommandError("command timed out after 60 s", argv=["squeue"], exit_status=None)
    fake.fail("squeue", start=60, end=61, error=timeout)
    w = watch(fake)
    attach(w, fake, stop_at=130)

    assert fake.times("squeue") == [60, 120]
    assert w.notes == [(60, "could not check the job: command timed out after 60 s: `squeue` exited None")]
    assert [r.state for r in w.records] == [JobState.RUNNING]


def test_watch_attached_ended_file_wins_over_a_failing_query(fake: FakeRemote) -> None:
    timeout = CommandError("command timed out after 60 s", argv=["squeue"], exit_status=None)
    fake.fail("squeue", error=timeout)
    fake.ended(JOB, 0, at=33)
    w = watch(fake)
    with pytest.raises(JobEnded):
        attach(w, fake, stop_at=100)


# ---- follow_log ----------------------------------------------------------------------------------


def test_follow_log_yields_new_bytes_until_ended(fake: FakeRemote) -> None:
    lines = ["hpcnb: job 4 started on node01\n", "hpcnb-launcher: starting (attempt 1)\n",
             "hpcnb-launcher: ready: 10.0.0.11:8888\n", "hpcnb-launcher: stopped by signal\n"]
    fake.log(JOB, lines[0])
    fake.log(JOB, "".join(lines[:2]), at=2.5)
    fake.log(JOB, "".join(lines[:3]), at=3)
    fake.log(JOB, "".join(lines), at=5)
    fake.ended(JOB, 0, at=5)
    w = watch(fake)
    chunks = list(w.watcher.follow_log())

    assert chunks == [lines[0].encode(), (lines[1] + lines[2]).encode(), lines[3].encode()]
    assert fake.read_times(hs.JobFiles("tb", JOB).log) == steps(0, 5, 1)
    assert w.clock.now == 5 and fake.times("squeue") == []


@pytest.mark.parametrize("script", ["squeue-cancelled", "sacct-cancelled", "unknown-to-both"])
def test_follow_log_stops_when_the_scheduler_says_the_job_ended(fake: FakeRemote, script: str) -> None:
    fake.log(JOB, "hpcnb: job 4 started on node01\n")
    fake.job("squeue", JOB, RUNNING)
    fake.job("squeue", JOB, CANCELLED if script == "squeue-cancelled" else None, at=40)
    if script == "sacct-cancelled":
        fake.job("sacct", JOB, SACCT_CANCELLED, at=40)
    w = watch(fake)
    chunks = list(w.watcher.follow_log())

    assert chunks == [b"hpcnb: job 4 started on node01\n"]
    assert fake.times("squeue") == [30, 60]
    assert w.clock.now == 60


# ---- wait_final ----------------------------------------------------------------------------------


def running_status() -> JobStatus:
    return JobStatus(JOB, JobState.RUNNING, "RUNNING", node="node01")


@pytest.mark.parametrize(("policy", "times"), [
    (PollPolicy(), [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]),
    (PollPolicy(cancel_wait=5), [0.5, 1.5, 3.5, 7.5]),
], ids=["cancel_wait-15", "cancel_wait-5"])
def test_wait_final_backs_off_until_cancel_wait(fake: FakeRemote, policy: PollPolicy,
                                                times: list[float]) -> None:
    fake.job("squeue", JOB, RUNNING)
    w = watch(fake, policy=policy)
    status = w.watcher.wait_final(running_status())

    assert status.state is JobState.RUNNING  # the last one seen
    assert fake.times("squeue") == times
    assert w.clock.pauses == [0.5, 1, 2, 4, 4, 4][:len(times)]


def test_wait_final_stops_at_the_final_state(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, RUNNING)
    fake.job("squeue", JOB, CANCELLED, at=3)
    w = watch(fake)
    status = w.watcher.wait_final(running_status())

    assert status.state is JobState.CANCELLED
    assert fake.times("squeue") == [0.5, 1.5, 3.5]
    assert w.records[-1] == status


def test_a_job_that_vanishes_after_the_cancel_was_cancelled(fake: FakeRemote) -> None:
    """Grid Engine forgets a job deleted before it ran: twice unknown after our cancel = cancelled."""
    w = watch(fake)  # neither squeue nor sacct knows the job
    status = w.watcher.wait_final(running_status())

    assert status.state is JobState.CANCELLED and status.raw_state == "gone after cancel"
    assert w.clock.now == 1.5 and w.records[-1] == status
    assert fake.times("sacct") == fake.times("squeue") == [0.5, 1.5]


def test_a_job_that_could_not_make_its_session_folder_says_why(fake: FakeRemote) -> None:
    fake.job("squeue", JOB, None)
    fake.job("sacct", JOB, sacct_line(JOB, "FAILED", exit_code="70:0"))
    with pytest.raises(JobEnded) as info:
        watch(fake).watcher.wait_ready()
    assert "exit code 70:0" in info.value.message
    assert f"could not create ~/.hpcnb/sessions/tb/{JOB}" in info.value.message
    assert "quota" in info.value.message


@pytest.mark.parametrize("jump", [3600.0, -3600.0])
def test_a_clock_step_while_attached_moves_no_warning(fake: FakeRemote, clock: FakeClock,
                                                     jump: float) -> None:
    # The laptop's clock steps an hour (NTP, a time zone set wrong, a date command) at t=100:
    # the warning still comes 600 s before the job's end (t=400), not at once nor never.
    fake.job("squeue", JOB, RUNNING)
    clock.at(100, lambda: setattr(clock, "epoch", clock.epoch + jump))
    w = watch(fake)
    attach(w, fake, stop_at=700, walltime_end=clock.time() + 1000, warn_before=600)

    assert w.notes == [(400, "job 4 reaches its time limit in 10 min; save your work")]
