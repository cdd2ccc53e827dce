"""The `local` scheduler end to end: real detached jobs under a temporary HOME, via LocalRemote."""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hpcnb.errors import CommandError
from hpcnb.remote import LocalRemote
from hpcnb.schedulers import JobState, JobStatus, get_scheduler

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="local backend: Linux/macOS")
local = get_scheduler("local")


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[LocalRemote]:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "HPCNB_LOCAL_KILL_GRACE": "1"}
    with LocalRemote(env=env) as r:
        yield r
    # End whatever a failed test left running (only our own jobs, by their cancel files).
    for job in (home / ".hpcnb/local/jobs").glob("*"):
        (job / "cancel").touch()


def submit(remote: LocalRemote, body: str, walltime: int | None = 60) -> str:
    script = "#!/bin/bash\n"
    if walltime is not None:
        script += f"# hpcnb-walltime-seconds: {walltime}\n"
    result = remote.run(local.submit_argv(), stdin=script + body)
    assert result.exit_status == 0, result.stderr
    return local.parse_job_id(result.stdout)


def status(remote: LocalRemote, job_id: str) -> JobStatus:
    result = remote.run(local.status_argv([job_id], None))
    assert result.exit_status == 0, result.stderr
    return local.parse_status(result.stdout)[job_id]


def wait_for(remote: LocalRemote, job_id: str, done: set[JobState], timeout: float = 20) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = status(remote, job_id)
        if st.state in done or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


def test_identity_and_argv() -> None:
    assert (local.name, local.template) == ("local", "local.sh.j2")
    assert local.submit_argv()[1:] == ["-m", "hpcnb.localjob", "submit"]
    assert local.status_argv(["1", "2"], "me")[-3:] == ["status", "1", "2"]
    assert local.cancel_argv("3")[-2:] == ["cancel", "3"]
    assert local.history_argv(["1"]) is None
    assert not local.controller_unavailable("anything", 1)
    with pytest.raises(ValueError):
        local.parse_job_id("Traceback ...")


def test_parse_status_lines() -> None:
    out = ('{"job_id": "4", "state": "running", "name": null, "node": "localhost", '
           '"time_left_s": 10, "exit_code": null, "reason": null}\nnoise\n'
           '{"job_id": "5", "state": "weird"}\n')
    jobs = local.parse_status(out)
    assert jobs["4"].state is JobState.RUNNING and jobs["4"].time_left_s == 10
    assert jobs["5"].state is JobState.UNKNOWN


def test_completes_and_reports_running_then_completed(remote: LocalRemote) -> None:
    job_id = submit(remote, 'echo "id=$HPCNB_JOB_ID wall=$HPCNB_WALLTIME_S"\nsleep 1.5\n')
    st = wait_for(remote, job_id, {JobState.RUNNING})
    assert st.state is JobState.RUNNING and st.node == "localhost"
    assert st.time_left_s is not None and 50 <= st.time_left_s <= 60
    st = wait_for(remote, job_id, {JobState.COMPLETED, JobState.FAILED})
    assert (st.state, st.exit_code, st.time_left_s) == (JobState.COMPLETED, "0", None)
    log = remote.read_file(f".hpcnb/local/jobs/{job_id}/output.log").decode()
    assert log == f"id={job_id} wall=60\n"


def test_exit_code_3_is_failed(remote: LocalRemote) -> None:
    job_id = submit(remote, "exit 3\n")
    st = wait_for(remote, job_id, {JobState.FAILED, JobState.COMPLETED})
    assert (st.state, st.exit_code) == (JobState.FAILED, "3")


def test_walltime_2s_is_timeout(remote: LocalRemote) -> None:
    t0 = time.monotonic()
    job_id = submit(remote, "sleep 30\n", walltime=2)
    st = wait_for(remote, job_id, {JobState.TIMEOUT, JobState.FAILED, JobState.COMPLETED})
    assert st.state is JobState.TIMEOUT and st.exit_code == "signal 15"
    assert 1.5 < time.monotonic() - t0 < 10


def test_cancel(remote: LocalRemote) -> None:
    job_id = submit(remote, "sleep 30\n")
    wait_for(remote, job_id, {JobState.RUNNING})
    assert remote.run(local.cancel_argv(job_id)).exit_status == 0
    st = wait_for(remote, job_id, {JobState.CANCELLED, JobState.FAILED, JobState.COMPLETED})
    assert st.state is JobState.CANCELLED
    assert remote.run(local.cancel_argv(job_id)).exit_status == 0   # again: nothing to do


def test_sigterm_ignored_gets_sigkill(remote: LocalRemote) -> None:
    job_id = submit(remote, "trap '' TERM\nwhile :; do sleep 0.1; done\n", walltime=1)
    st = wait_for(remote, job_id, {JobState.TIMEOUT, JobState.FAILED, JobState.COMPLETED})
    assert st.state is JobState.TIMEOUT


def test_job_outlives_the_submitter_and_files_are_private(remote: LocalRemote, tmp_path: Path) -> None:
    job_id = submit(remote, "sleep 1\n")   # the submitting process has already exited
    st = wait_for(remote, job_id, {JobState.COMPLETED, JobState.FAILED})
    assert st.state is JobState.COMPLETED
    job_dir = tmp_path / "home" / ".hpcnb/local/jobs" / job_id
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    for f in job_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_ids_are_unique_under_concurrent_submits(remote: LocalRemote) -> None:
    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(lambda _: submit(remote, "true\n"), range(6)))
    assert sorted(ids, key=int) == [str(i) for i in range(1, 7)]
    result = remote.run(local.status_argv([], None))   # no ids: every job
    assert set(local.parse_status(result.stdout)) == set(ids)


def test_unknown_job(remote: LocalRemote) -> None:
    result = remote.run(local.status_argv(["42"], None))
    assert result.exit_status != 0 and local.is_unknown_job_error(result.stderr)
    result = remote.run(local.cancel_argv("42"))
    assert result.exit_status != 0 and local.is_unknown_job_error(result.stderr)


def test_local_remote_basics(remote: LocalRemote, tmp_path: Path) -> None:
    r = remote.run(["sh", "-c", "cat; echo err >&2; exit 4"], stdin="in")
    assert (r.exit_status, r.stdout, r.stderr) == (4, "in", "err\n")
    with pytest.raises(FileNotFoundError):
        remote.read_file("nope.txt")
    (tmp_path / "home" / "f.txt").write_text("x")
    assert remote.read_file("f.txt") == b"x"
    with pytest.raises(CommandError) as err:
        remote.run(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.5)
    assert err.value.argv[0] == "sh" and err.value.exit_status is None
    with pytest.raises(CommandError):
        remote.run([str(tmp_path / "no-such-program")])
