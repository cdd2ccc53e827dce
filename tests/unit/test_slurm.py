"""SlurmScheduler: argv builders and parsers against captured and documented squeue/sacct output."""

from __future__ import annotations

import pytest
from fakes import captured

from hpcnb.schedulers import JobState, get_scheduler
from hpcnb.schedulers.slurm import STATE_MAP, first_host, map_state, time_left

slurm = get_scheduler("slurm")



def test_identity() -> None:
    assert (slurm.name, slurm.template) == ("slurm", "slurm.sh.j2")


@pytest.mark.parametrize(("out", "job_id"), [
    ("123\n", "123"), ("123;cluster2\n", "123"), ("  4567  ", "4567"),
    ("sbatch: warning: foo\n89\n", "89"),
])
def test_parse_job_id(out: str, job_id: str) -> None:
    assert slurm.parse_job_id(out) == job_id


@pytest.mark.parametrize("out", ["", "Submitted batch job\n", "abc;x", "12a"])
def test_parse_job_id_garbage(out: str) -> None:
    with pytest.raises(ValueError):
        slurm.parse_job_id(out)


def test_argv() -> None:
    assert slurm.submit_argv() == ["sbatch", "--parsable"]
    argv = slurm.status_argv(["1", "2"], "alice")
    assert argv[0] == "squeue" and "--noheader" in argv and "--states=all" in argv
    assert "--jobs=1,2" in argv and "--user=alice" in argv
    assert "--format=%i|%T|%P|%N|%L|%r|%S|%j" in argv
    assert "--me" in slurm.status_argv([], None)
    assert slurm.cancel_argv("7") == ["scancel", "7"]
    hist = slurm.history_argv(["7", "8"])
    assert hist is not None and hist[:4] == ["sacct", "--noheader", "--parsable2", "--allocations"]
    assert "--jobs=7,8" in hist and slurm.history_argv([]) is None


@pytest.mark.parametrize("bad", ["-1", "1 2", "1,2", "", "--all"])
def test_job_ids_are_never_options(bad: str) -> None:
    with pytest.raises(ValueError):
        slurm.status_argv([bad], None)
    with pytest.raises(ValueError):
        slurm.cancel_argv(bad)


# Every state of squeue(1) "JOB STATE CODES" (22.05) must be in the map.
SQUEUE_STATES = (
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "CONFIGURING", "COMPLETING", "DEADLINE", "FAILED",
    "NODE_FAIL", "OUT_OF_MEMORY", "PENDING", "PREEMPTED", "RUNNING", "RESV_DEL_HOLD",
    "REQUEUE_FED", "REQUEUE_HOLD", "REQUEUED", "RESIZING", "REVOKED", "SIGNALING",
    "SPECIAL_EXIT", "STAGE_OUT", "STOPPED", "SUSPENDED", "TIMEOUT",
)


def test_state_map_is_complete() -> None:
    assert set(SQUEUE_STATES) == set(STATE_MAP)
    assert map_state("CANCELLED by 1000") is JobState.CANCELLED
    assert map_state("RUNNING+") is JobState.RUNNING
    assert map_state("WHATEVER") is JobState.UNKNOWN


@pytest.mark.parametrize(("text", "seconds"), [
    ("UNLIMITED", None), ("NOT_SET", None), ("INVALID", None), ("", None),
    ("1-04:00:00", 100800), ("3:58:12", 14292), ("59:30", 3570), ("0:00", 0), ("45", 45),
])
def test_time_left(text: str, seconds: int | None) -> None:
    assert time_left(text) == seconds


@pytest.mark.parametrize(("text", "host"), [
    ("(null)", None), ("", None), ("node01", "node01"), ("node[01-02]", "node01"),
    ("node[07,09-10],gpu1", "node07"), ("gpu1,gpu2", "gpu1"), ("n[3-4]-ib", "n3-ib"),
])
def test_first_host(text: str, host: str | None) -> None:
    assert first_host(text) == host


# (job id, state, node, reason, time left, expected start, name) from slurm_squeue_states_doc.txt
SQUEUE_TABLE = [
    ("1001", JobState.RUNNING, "node01", None, 14292, None, "hpcnb"),
    ("1002", JobState.PENDING, None, "Priority", 100800, "2024-05-02T14:30:00", "hpcnb|with a pipe"),
    ("1003", JobState.PENDING, None, "PartitionTimeLimit", 14400, None, "hpcnb"),
    ("1004", JobState.COMPLETING, "node01", None, 0, None, "hpcnb"),
    ("1005", JobState.TIMEOUT, "node02", "TimeLimit", 0, None, "hpcnb"),
    ("1006", JobState.PENDING, "node03", None, 3570, "2024-05-02T10:01:00", "hpcnb"),
    ("1007", JobState.SUSPENDED, "node01", None, 3600, None, "hpcnb"),
    ("1008", JobState.RUNNING, "gpu1", None, None, None, "hpcnb"),
    ("1009", JobState.PENDING, None, "JobHeldUser", None, None, "hpcnb"),
    ("1010", JobState.OUT_OF_MEMORY, "node02", "OutOfMemory", None, None, "hpcnb"),
    ("1011", JobState.HELD, None, "JobHeldAdmin", 300, None, "hpcnb"),
    ("1012", JobState.UNKNOWN, None, None, 300, None, "hpcnb"),
    ("1013_7", JobState.RUNNING, "node04", None, 45, None, "array task"),
]


@pytest.mark.parametrize("row", SQUEUE_TABLE, ids=[r[0] for r in SQUEUE_TABLE])
def test_parse_status_doc(row: tuple) -> None:
    jobs = slurm.parse_status(captured("slurm_squeue_states_doc.txt"))
    job_id, state, node, reason, left, start, name = row
    st = jobs[job_id]
    assert (st.state, st.node, st.reason, st.time_left_s, st.expected_start, st.name) == (
        state, node, reason, left, start, name)


def test_parse_status_ignores_noise() -> None:
    assert slurm.parse_status("\nsqueue: error: something\n") == {}


SACCT_TABLE = [
    ("2001", JobState.COMPLETED, "node01", "0:0"),
    ("2002", JobState.CANCELLED, "node02", "0:15"),
    ("2003", JobState.CANCELLED, None, "0:0"),
    ("2004", JobState.TIMEOUT, "node01", "0:0"),
    ("2005", JobState.FAILED, "node01", "3:0"),
    ("2006", JobState.OUT_OF_MEMORY, "node01", "0:125"),
    ("2007", JobState.NODE_FAIL, "node03", "0:0"),
    ("2008", JobState.PREEMPTED, "node03", "0:0"),
    ("2009", JobState.NODE_FAIL, "node03", "0:0"),
    ("2010", JobState.TIMEOUT, "node03", "0:0"),
]


@pytest.mark.parametrize("row", SACCT_TABLE, ids=[r[0] for r in SACCT_TABLE])
def test_parse_history_doc(row: tuple) -> None:
    jobs = slurm.parse_history(captured("slurm_sacct_doc.txt"))
    job_id, state, node, exit_code = row
    st = jobs[job_id]
    assert (st.state, st.node, st.exit_code) == (state, node, exit_code)
    assert st.state.is_final


def test_history_name_with_pipe_and_raw_state() -> None:
    jobs = slurm.parse_history(captured("slurm_sacct_doc.txt"))
    assert jobs["2007"].name == "a|b"
    assert jobs["2002"].raw_state == "CANCELLED by 1000"


def test_controller_down_captured() -> None:
    for name in ("slurm_squeue_controller_down_22.05.txt",
                 "slurm_scancel_controller_down_22.05.txt"):
        err = captured(name)
        assert slurm.controller_unavailable(err, 1)
        assert not slurm.is_unknown_job_error(err)
    assert not slurm.controller_unavailable("", 0)


@pytest.mark.parametrize("err", [
    "squeue: error: slurm_receive_msg: Socket timed out on send/recv operation",
    "slurm_load_jobs error: Slurm controller not responding",
    "squeue: error: Connection refused",
])
def test_controller_down_texts(err: str) -> None:
    assert slurm.controller_unavailable(err, 1)


@pytest.mark.parametrize("err", [
    "slurm_load_jobs error: Invalid job id specified",
    "scancel: error: Kill job error on job id 9: Invalid job id specified",
])
def test_unknown_job(err: str) -> None:
    assert slurm.is_unknown_job_error(err)
    assert not slurm.controller_unavailable(err, 1)


def test_history_unsupported_captured() -> None:
    err = captured("slurm_sacct_no_accounting_22.05.txt")
    assert slurm.history_unsupported(err, 1)
    assert not slurm.history_unsupported(err, 0)


# ---- live captures from the testbed (Slurm 22.05.8) ---------------------------------------------

# (file, job id, state, node, reason, time left, expected start, name)
LIVE_SQUEUE = [
    ("slurm_squeue_22.05.txt", "1", JobState.RUNNING, "node01", None, 291, None, "hpcnb|pipe"),
    ("slurm_squeue_22.05.txt", "2", JobState.FAILED, "node01", "NonZeroExitCode", 300, None,
     "hpcnb"),
    ("slurm_squeue_22.05.txt", "3", JobState.RUNNING, "node01", None, 51, None, "hpcnb"),
    ("slurm_squeue_22.05.txt", "4", JobState.PENDING, None, "BeginTime", 300,
     "2026-11-26T00:19:07", "hpcnb"),
    ("slurm_squeue_22.05.txt", "5", JobState.PENDING, None, "JobHeldUser", 300, None, "hpcnb"),
    ("slurm_squeue_22.05.txt", "6", JobState.CANCELLED, "node01", None, 297, None, "hpcnb"),
    ("slurm_squeue_ended_22.05.txt", "1", JobState.COMPLETED, "node01", None, 200, None,
     "hpcnb|pipe"),
    ("slurm_squeue_ended_22.05.txt", "3", JobState.TIMEOUT, "node01", "TimeLimit", None, None,
     "hpcnb"),
    ("slurm_squeue_start_22.05.txt", "4", JobState.PENDING, None, "BeginTime", 300,
     "2026-11-26T00:19:07", "hpcnb"),
]


@pytest.mark.parametrize("row", LIVE_SQUEUE, ids=[f"{r[0]}:{r[1]}" for r in LIVE_SQUEUE])
def test_parse_status_live(row: tuple) -> None:
    name, job_id, state, node, reason, left, start, job_name = row
    st = slurm.parse_status(captured(name))[job_id]
    assert (st.state, st.node, st.reason, st.time_left_s, st.expected_start, st.name) == (
        state, node, reason, left, start, job_name)


def test_purged_job_is_absent_live() -> None:
    # Job 7 had ended and left slurmctld's memory: squeue simply does not print it (exit 0).
    assert "7" not in slurm.parse_status(captured("slurm_squeue_ended_22.05.txt"))


LIVE_SACCT = [
    ("slurm_sacct_22.05.txt", "1", JobState.RUNNING, "node01", "0:0"),
    ("slurm_sacct_22.05.txt", "2", JobState.FAILED, "node01", "3:0"),
    ("slurm_sacct_22.05.txt", "4", JobState.PENDING, None, "0:0"),
    ("slurm_sacct_22.05.txt", "6", JobState.CANCELLED, "node01", "0:0"),
    ("slurm_sacct_ended_22.05.txt", "1", JobState.COMPLETED, "node01", "0:0"),
    ("slurm_sacct_ended_22.05.txt", "3", JobState.TIMEOUT, "node01", "0:0"),
    ("slurm_sacct_ended_22.05.txt", "7", JobState.COMPLETED, "node01", "0:0"),
    ("slurm_sacct_cancelled_pending_22.05.txt", "4", JobState.CANCELLED, None, "0:0"),
    ("slurm_sacct_cancelled_pending_22.05.txt", "5", JobState.CANCELLED, None, "0:0"),
]


@pytest.mark.parametrize("row", LIVE_SACCT, ids=[f"{r[0]}:{r[1]}" for r in LIVE_SACCT])
def test_parse_history_live(row: tuple) -> None:
    name, job_id, state, node, exit_code = row
    st = slurm.parse_history(captured(name))[job_id]
    assert (st.state, st.node, st.exit_code) == (state, node, exit_code)


def test_unknown_job_live() -> None:
    err = captured("slurm_squeue_unknown_job_22.05.txt")
    assert slurm.is_unknown_job_error(err, 1)
    assert not slurm.controller_unavailable(err, 1)


def test_step_in_is_an_overlapping_srun_of_one_shell_line() -> None:
    slurm = get_scheduler("slurm")
    assert slurm.step_in_argv("123", (), True) == ["srun", "--jobid=123", "--overlap", "--pty", "bash", "-l"]
    assert slurm.step_in_argv("123", ("nvidia-smi", "-L"), False) == [
        "srun", "--jobid=123", "--overlap", "bash", "-l", "-c", "nvidia-smi -L"]
    with pytest.raises(ValueError):
        slurm.step_in_argv("1 2", (), True)
    for name in ("pbs", "sge", "lsf", "local"):
        other = get_scheduler(name)
        assert other.step_in_argv("1", (), True) is None and other.step_in_refusal
