"""The session flow through hpcnb's Python API (hpcnb.cluster.Cluster, hpcnb.session.Session) with
no SSH: the Cluster's connection is a FakeRemote (tests/unit/fakes.py) replaying captured Slurm
output, its store a file in tmp_path, and every JobWatcher's clock the test's FakeClock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes import FakeClock, FakeRemote, captured_record

from hpcnb import handshake as hs
from hpcnb import watcher
from hpcnb.cluster import Cluster
from hpcnb.config import ClusterConfig
from hpcnb.errors import HpcnbError, JobEnded, JobNotFound, UsageError
from hpcnb.schedulers import JobState
from hpcnb.session import Session
from hpcnb.store import SessionRecord

SQUEUE = "slurm_squeue_22.05.txt"


def pending(job_id: str) -> str:
    return captured_record(SQUEUE, "4", as_id=job_id)  # PENDING, BeginTime


def running(job_id: str) -> str:
    return captured_record(SQUEUE, "3", as_id=job_id)  # RUNNING on node01, 0:51 left


def cancelled(job_id: str) -> str:
    return captured_record(SQUEUE, "6", as_id=job_id)


SACCT_FAILED = captured_record("slurm_sacct_22.05.txt", "2")  # job 2: FAILED, exit code 3:0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The clock of every JobWatcher a Session makes (they are made without one)."""
    fake_clock = FakeClock()
    monkeypatch.setattr(watcher, "Clock", lambda: fake_clock)
    return fake_clock


@pytest.fixture
def fake(clock: FakeClock) -> FakeRemote:
    return FakeRemote(clock)


def config(scheduler: str = "slurm") -> ClusterConfig:
    return ClusterConfig(name="tb", scheduler=scheduler, source="tests/unit/test_session_flow.py",
                         login_host="login1.example.org", user="alice", start_timeout=60)


@pytest.fixture
def cluster(fake: FakeRemote, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(config=config(), state_dir=tmp_path)
    c._remote = fake  # the login connection, made before first use
    yield c
    c.close()


def record(cluster_name: str, job_id: str, scheduler: str = "slurm") -> SessionRecord:
    """A running session as this laptop's store has it."""
    now = time.time()
    return SessionRecord(cluster=cluster_name, job_id=job_id, name="hpcnb", scheduler=scheduler,
                         partition="debug", tunnel="direct", submitted_at=now, state="running",
                         node=None, time_left_s=None, updated_at=now)


# ---- submit and wait -----------------------------------------------------------------------------


@pytest.mark.parametrize("parsable", ["42\n", "42;tb\n"])
def test_submit_sends_the_script_and_clears_an_older_jobs_files(cluster: Cluster, fake: FakeRemote,
                                                                parsable: str) -> None:
    fake.answer("sbatch", parsable)
    fake.handshake("42", token="an-older-job-42")  # job ids come round again
    fake.ended("42", 0)
    session = cluster.submit(hours=2, partition="debug")

    assert session.job_id == "42" and repr(session) == "Session('tb', '42')"
    sbatch, rm = fake.calls
    assert sbatch.argv == ("sbatch", "--parsable")
    script = sbatch.stdin or ""
    assert script.startswith("#!/bin/bash -l\n")  # a login shell, as sites' job scripts
    assert "#SBATCH --time=02:00:00" in script.splitlines()
    assert "#SBATCH --partition=debug" in script.splitlines()
    files = hs.JobFiles("tb", "42")
    assert rm.argv == ("rm", "-f", files.connection, files.ended)
    assert fake.current(files.connection) is None and fake.current(files.ended) is None

    stored = cluster.store.get("tb", "42")
    assert stored is not None
    assert (stored.state, stored.time_left_s, stored.partition, stored.name, stored.node) == (
        "pending", 7200, "debug", "hpcnb", None)
    assert (stored.scheduler, stored.tunnel, stored.ended_at) == ("slurm", "direct", None)


def test_wait_ready_returns_the_new_handshake_and_records_running(cluster: Cluster, fake: FakeRemote,
                                                                  clock: FakeClock) -> None:
    fake.answer("sbatch", "42\n")
    fake.handshake("42", token="an-older-job-42")  # removed by the submit
    fake.job("squeue", "42", pending("42"))
    fake.job("squeue", "42", running("42"), at=12)
    fake.handshake("42", at=20, token="tok-42")
    session = cluster.submit(hours=1)
    events: list[watcher.WaitEvent] = []
    found = session.wait_ready(events.append)

    assert found.token == "tok-42" and clock.now == 20
    assert [e.phase for e in events] == ["queued", "queued", "starting", "ready"]
    assert fake.times("squeue") == [0, 2, 15]
    assert "--user=alice" in fake.calls_to("squeue")[0].argv
    assert session.node == "node01"
    stored = cluster.store.get("tb", "42")
    assert stored is not None and (stored.state, stored.node) == ("running", "node01")
    # Ready now: asked again, it answers at once from connection.json.
    assert session.wait_ready() == found and fake.times("squeue") == [0, 2, 15]


# ---- existing sessions ---------------------------------------------------------------------------


@pytest.fixture
def three_sessions(cluster: Cluster, fake: FakeRemote) -> Cluster:
    """Jobs 101 (running), 102 (pending) and 103 (purged from slurmctld, no accounting record)."""
    for job_id in ("101", "102", "103"):
        fake.answer("sbatch", f"{job_id}\n")
    for _ in range(3):
        cluster.submit()
    fake.job("squeue", "101", running("101"))
    fake.job("squeue", "102", pending("102"))
    fake.calls.clear()
    return cluster


def test_sessions_asks_the_scheduler_once_for_all_active(three_sessions: Cluster, fake: FakeRemote) -> None:
    listed = three_sessions.sessions()

    assert [c.argv[0] for c in fake.calls] == ["squeue", "sacct"]
    assert "--jobs=101,102,103" in fake.calls[0].argv and "--jobs=103" in fake.calls[1].argv
    states = {r.job_id: (r.state, r.node) for r in listed}
    assert states["101"] == ("running", "node01") and states["102"] == ("pending", None)
    gone = three_sessions.store.get("tb", "103")
    assert gone is not None and gone.state == "ended"


def test_a_session_marked_ended_leaves_the_active_ones(three_sessions: Cluster, fake: FakeRemote) -> None:
    three_sessions.sessions()
    gone = three_sessions.store.get("tb", "103")
    assert gone is not None and gone.ended_at is not None

    fake.calls.clear()
    listed = three_sessions.sessions()
    assert [r.job_id for r in listed] == ["102", "101"]
    assert [c.argv[0] for c in fake.calls] == ["squeue"] and "--jobs=101,102" in fake.calls[0].argv


def test_session_running_of_an_ended_job_raises_with_the_logs_hint(cluster: Cluster,
                                                                   fake: FakeRemote) -> None:
    fake.job("sacct", "2", SACCT_FAILED)  # squeue no longer knows job 2
    with pytest.raises(JobEnded) as info:
        cluster.session("2", running=True)

    assert info.value.message == "job 2 has ended (failed)"
    assert info.value.hint == "hpcnb logs 2 --cluster tb"
    assert "hpcnb logs 2 --cluster tb" in str(info.value)


def test_session_this_laptop_did_not_know_is_recorded(cluster: Cluster, fake: FakeRemote) -> None:
    fake.job("squeue", "3", running("3"))
    fake.job("sacct", "2", SACCT_FAILED)
    session = cluster.session("3", running=True)

    assert session.status is not None and session.node == "node01"
    stored = cluster.store.get("tb", "3")
    assert stored is not None
    assert (stored.state, stored.node, stored.partition, stored.name, stored.time_left_s) == (
        "running", "node01", "debug", "hpcnb", 51)
    assert stored.ended_at is None
    # Without running=True an ended job is a session too, recorded as ended.
    ended = cluster.store.get("tb", cluster.session("2").job_id)
    assert ended is not None and ended.state == "failed" and ended.ended_at is not None


@pytest.mark.parametrize("operation", [
    lambda c: c.session("55"),
    lambda c: c.session("55", running=True),
    lambda c: c.status("55"),
    lambda c: list(Session(c, "55").logs()),
    lambda c: Session(c, "55").cancel(),
], ids=["session", "session-running", "status", "logs", "cancel"])
def test_a_job_of_another_cluster_is_not_asked_about(cluster: Cluster, fake: FakeRemote,
                                                     operation: Callable[[Cluster], object]) -> None:
    cluster.store.add(record("other", "55"))
    with pytest.raises(JobNotFound) as info:
        operation(cluster)

    assert info.value.hint == "add --cluster other"
    assert "job 55 is a session of cluster 'other', not 'tb'" in info.value.message
    assert fake.calls == [] and fake.reads == []


# ---- cancel and logs -----------------------------------------------------------------------------


def test_cancel_runs_scancel_once_and_waits_for_the_final_state(cluster: Cluster, fake: FakeRemote,
                                                                clock: FakeClock) -> None:
    fake.job("squeue", "3", running("3"))
    fake.on("scancel", lambda _argv: fake.job("squeue", "3", cancelled("3"), at=clock.now + 2))
    session = cluster.session("3")
    status = session.cancel()

    assert [c.argv for c in fake.calls_to("scancel")] == [("scancel", "3")]
    assert status.state is JobState.CANCELLED and session.status == status
    assert fake.times("squeue") == [0, 0, 0.5, 1.5, 3.5]  # session, refresh, then 0.5, 1, 2 s
    stored = cluster.store.get("tb", "3")
    assert stored is not None and stored.state == "cancelled" and stored.ended_at is not None


def test_cancel_of_an_ended_job_does_not_run_scancel(cluster: Cluster, fake: FakeRemote) -> None:
    fake.job("sacct", "2", SACCT_FAILED)
    status = Session(cluster, "2").cancel()

    assert status.state is JobState.FAILED
    assert fake.calls_to("scancel") == []


def test_logs_yields_the_jobs_output(cluster: Cluster, fake: FakeRemote) -> None:
    fake.log("3", "hpcnb: job 3 started on node01\n")
    assert list(Session(cluster, "3").logs()) == [b"hpcnb: job 3 started on node01\n"]
    assert fake.calls == []  # the log is a file: no scheduler query


def test_logs_before_the_job_started_says_no_output_yet(cluster: Cluster, fake: FakeRemote) -> None:
    fake.job("squeue", "4", pending("4"))
    with pytest.raises(HpcnbError, match=r"^job 4 has no output yet \(pending\)$"):
        list(Session(cluster, "4").logs())


def test_logs_follow_until_the_notebook_ends(cluster: Cluster, fake: FakeRemote, clock: FakeClock) -> None:
    fake.log("3", "started\n")
    fake.log("3", "started\nready\n", at=3)
    fake.ended("3", 0, at=4)
    assert list(Session(cluster, "3").logs(follow=True)) == [b"started\n", b"ready\n"]
    assert clock.now == 4


@pytest.mark.parametrize("bad", ["../x", "-rf", "x/../../y", "1 2", "", "42;id"])
@pytest.mark.parametrize("operation", [
    lambda c, j: c.session(j),
    lambda c, j: c.session(j, running=True),
    lambda c, j: c.status(j),
    lambda c, j: c.check_job(j),
    lambda c, j: Session(c, j),
], ids=["session", "session-running", "status", "check_job", "Session"])
def test_malformed_job_ids_are_refused_before_any_command(
        cluster: Cluster, fake: FakeRemote, bad: str, operation: Callable[[Cluster, str], object]) -> None:
    with pytest.raises(UsageError, match="is not a job id"):
        operation(cluster, bad)
    assert fake.calls == [] and fake.reads == []


# ---- suspected bugs ------------------------------------------------------------------------------


def test_attach_to_a_session_whose_notebook_ended(cluster: Cluster, fake: FakeRemote) -> None:
    fake.job("squeue", "3", captured_record("slurm_squeue_states_doc.txt", "1004", as_id="3"))
    fake.handshake("3")
    fake.ended("3", 0)
    session = cluster.session("3", running=True)  # COMPLETING is not final: allowed
    with pytest.raises(JobEnded):
        session.wait_ready()


def test_pbs_sessions_with_one_purged_job(fake: FakeRemote, tmp_path: Path) -> None:
    block = captured_record("pbspro_qstat_f_doc.txt", "1234.pbsserver")  # R on node01
    fake.job("qstat", "1234.pbsserver", block)
    fake.job("qstat -x", "1234.pbsserver", block)  # 1199.pbsserver: past job_history_duration
    with Cluster(config=config("pbs"), state_dir=tmp_path) as pbs:
        pbs._remote = fake
        pbs.store.add(record("tb", "1199.pbsserver", "pbs"))
        pbs.store.add(record("tb", "1234.pbsserver", "pbs"))
        pbs.sessions()
        stored = {job: pbs.store.get("tb", job) for job in ("1199.pbsserver", "1234.pbsserver")}
    states = {job: r.state if r else None for job, r in stored.items()}
    assert states == {"1199.pbsserver": "ended", "1234.pbsserver": "running"}
