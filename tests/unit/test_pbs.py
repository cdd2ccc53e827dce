"""PBSScheduler: PBS Pro, OpenPBS, Torque and Slurm's torque wrappers, against documented and captured
output."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import CAPTURED, captured

from hpcnb.batch import BatchSystem
from hpcnb.remote import CommandResult
from hpcnb.schedulers import JobState, get_scheduler
from hpcnb.schedulers.base import parse_duration
from hpcnb.schedulers.pbs import (
    EXIT_FINISHED_JOB,
    EXIT_UNKNOWN_JOB,
    STATE_MAP,
    first_exec_host,
    parse_qstat_full,
)

pbs = get_scheduler("pbs")



def test_identity() -> None:
    assert (pbs.name, pbs.template) == ("pbs", "pbs.sh.j2")


@pytest.mark.parametrize(("out", "job_id"), [
    ("1234.pbsserver\n", "1234.pbsserver"), ("1234\n", "1234"),
    ("77.torqueserver.example.org\n", "77.torqueserver.example.org"), ("12[].srv\n", "12[].srv"),
])
def test_parse_job_id(out: str, job_id: str) -> None:
    assert pbs.parse_job_id(out) == job_id


@pytest.mark.parametrize("out", [
    "", "qsub: Unknown queue\n",
    # Slurm's wrapper prints its failure on stdout (see /usr/bin/qsub):
    "There was an error running the Slurm sbatch command.\nThe command was:\n'x'\n"
    "and the output was:\n'sbatch: error: Batch job submission failed'\n",
])
def test_parse_job_id_garbage(out: str) -> None:
    with pytest.raises(ValueError):
        pbs.parse_job_id(out)


def test_argv() -> None:
    assert pbs.status_argv(["1.s", "2.s"], "alice") == ["qstat", "-f", "1.s", "2.s"]
    # to the server itself, past a cache like NCAR's (hpcnb/schedulers/pbs.py)
    assert pbs.history_argv(["1.s"]) == ["env", "QSCACHE_BYPASS=1", "qstat", "-x", "-f", "1.s"]
    assert pbs.history_argv([]) is None
    assert pbs.cancel_argv("1.s") == ["qdel", "1.s"]
    with pytest.raises(ValueError):
        pbs.cancel_argv("-W force")


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs sh")
def test_submit_argv_copies_stdin_to_a_private_file(tmp_path: Path) -> None:
    """The submit argv works with a qsub that needs a regular file (PBS Pro, Slurm's wrapper)."""
    fake = tmp_path / "qsub"
    fake.write_text('#!/bin/sh\n[ -f "$1" ] || exit 9\nls -l "$1" | cut -c1-10\ncat "$1"\necho 42.srv\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    argv = pbs.submit_argv()
    proc = subprocess.run(argv, input="#PBS -N x\necho hi\n", capture_output=True, text=True,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:3] == ["-rw-------", "#PBS -N x", "echo hi"]
    assert pbs.parse_job_id(proc.stdout) == "42.srv"
    assert [p.name for p in tmp_path.iterdir()] == ["qsub"]   # temp script removed


def test_state_map_letters() -> None:
    assert set(STATE_MAP) == set("BEFHMQRSTUWXC")


@pytest.mark.parametrize(("text", "host"), [
    ("node01/0*2+node02/0", "node01"), ("node01/0-1+node02/0", "node01"), ("node01/1", "node01"),
    ("--", None), (None, None), ("", None),
])
def test_first_exec_host(text: str | None, host: str | None) -> None:
    assert first_exec_host(text) == host


def test_pbspro_wrapped_values_are_joined() -> None:
    attrs = parse_qstat_full(captured("pbspro_qstat_f_doc.txt"))["1234.pbsserver"]
    assert "PBS_O_LOGNAME=alice," in attrs["Variable_List"]
    assert attrs["Variable_List"].endswith("PBS_O_HOST=login1.example.org")
    assert attrs["Submit_arguments"] == "/tmp/hpcnb-job.Xk3v9Q"


# (file, job id, state, node, time left, reason contains, expected start, exit code)
TABLE = [
    ("pbspro_qstat_f_doc.txt", "1234.pbsserver", JobState.RUNNING, "node01", 2995, "Job run", None,
     None),
    ("pbspro_qstat_f_doc.txt", "1235.pbsserver", JobState.PENDING, None, 14400,
     "Insufficient amount of resource: ngpus (R: 1 A: 0 T: 4)", "Thu May  2 14:30:00 2024", None),
    ("pbspro_qstat_f_doc.txt", "1236.pbsserver", JobState.HELD, None, 1800, None, None, None),
    ("pbspro_qstat_xf_history_doc.txt", "1240.pbsserver", JobState.COMPLETED, "node01", None,
     "finished", None, "0"),
    ("pbspro_qstat_xf_history_doc.txt", "1241.pbsserver", JobState.CANCELLED, "node02", None,
     "terminated", None, "271"),
    ("pbspro_qstat_xf_history_doc.txt", "1242.pbsserver", JobState.TIMEOUT, "node01", None,
     "failed", None, "-29"),
    ("pbspro_qstat_xf_history_doc.txt", "1243.pbsserver", JobState.FAILED, "node01", None, None,
     None, "3"),
    ("pbspro_qstat_xf_history_doc.txt", "1244.pbsserver", JobState.OUT_OF_MEMORY, None, None, None,
     None, "-27"),
    ("torque_qstat_f_doc.txt", "77.torqueserver.example.org", JobState.RUNNING, "node01", 3594,
     None, None, None),
    ("torque_qstat_f_doc.txt", "78.torqueserver.example.org", JobState.COMPLETED, "node02", None,
     None, None, "0"),
    ("torque_qstat_f_doc.txt", "79.torqueserver.example.org", JobState.TIMEOUT, "node02", None,
     None, None, "271"),
    ("torque_qstat_fx_xml_doc.txt", "80.torqueserver.example.org", JobState.FAILED, "node03", None,
     None, None, "2"),
    # Slurm's wrapper, live (testbed): no resources_used, so a running job's time left is unknown;
    # every ended job is C with no exit status (job 2 exited 3, job 6 was cancelled).
    ("torque_wrapper_qstat_f_22.05.txt", "3", JobState.RUNNING, "node01", None, None, None, None),
    ("torque_wrapper_qstat_f_22.05.txt", "4", JobState.PENDING, None, 300, None, None, None),
    ("torque_wrapper_qstat_f_22.05.txt", "5", JobState.PENDING, None, 300, None, None, None),
    ("torque_wrapper_qstat_f_22.05.txt", "2", JobState.COMPLETED, "node01", None, None, None, None),
    ("torque_wrapper_qstat_f_22.05.txt", "6", JobState.COMPLETED, "node01", None, None, None, None),
    ("torque_wrapper_qstat_f_ended_22.05.txt", "3", JobState.COMPLETED, "node01", None, None, None,
     None),
    # OpenPBS 23.06 on the testbed, live (tests/testbed/capture_openpbs.py): time left is the limit
    # minus resources_used.walltime (00:00:00 until the MoM's first poll); ended jobs are F with
    # substate 92 finished / 93 failed / 91 deleted, and the exit status, in `qstat -x`.
    ("openpbs_qstat_f_running.txt", "0.login1", JobState.RUNNING, "node01", 600,
     "Job run at Tue Dec 01 at 14:41 on (node01:ncpus=8)", None, None),
    ("openpbs_qstat_f_queued.txt", "2.login1", JobState.PENDING, None, 300,
     "Not Running: Not enough free nodes available", None, None),
    ("openpbs_qstat_f_held.txt", "3.login1", JobState.HELD, None, 300, None, None, None),
    ("openpbs_qstat_f_array.txt", "4[].login1", JobState.PENDING, None, 300,
     "Not enough free nodes", None, None),
    ("openpbs_qstat_xf_finished.txt", "5.login1", JobState.COMPLETED, "node01", None,
     "and finished", None, "0"),
    ("openpbs_qstat_xf_failed.txt", "6.login1", JobState.FAILED, "node01", None, "and failed",
     None, "3"),
    ("openpbs_qstat_xf_deleted.txt", "0.login1", JobState.CANCELLED, "node01", None,
     "and terminated by hpcuser@login1", None, "271"),
    ("openpbs_qstat_xf_deleted_held.txt", "3.login1", JobState.CANCELLED, None, None, None, None,
     None),
    ("openpbs_qstat_xf_array.txt", "4[].login1", JobState.COMPLETED, None, None,
     "Job Array Began", None, "0"),
]


@pytest.mark.parametrize("row", TABLE, ids=[f"{r[0]}:{r[1]}" for r in TABLE])
def test_parse_status(row: tuple) -> None:
    name, job_id, state, node, left, reason, start, exit_code = row
    st = pbs.parse_status(captured(name))[job_id]
    assert (st.state, st.node, st.time_left_s, st.expected_start, st.exit_code) == (
        state, node, left, start, exit_code)
    assert (reason is None and st.reason is None) or (reason and reason in (st.reason or ""))
    assert st.name == "hpcnb"


def test_wrapper_live_names_and_tabs() -> None:
    jobs = pbs.parse_status(captured("torque_wrapper_qstat_f_22.05.txt"))
    assert set(jobs) == {"1", "2", "3", "4", "5", "6"}
    assert jobs["1"].name == "hpcnb|pipe" and jobs["5"].partition == "gpu"
    # job 7 had been purged: the wrapper skips it silently (exit 0 since others were found)
    assert "7" not in pbs.parse_status(captured("torque_wrapper_qstat_f_ended_22.05.txt"))


def test_history_parses_like_status() -> None:
    jobs = pbs.parse_history(captured("pbspro_qstat_xf_history_doc.txt"))
    assert len(jobs) == 5 and all(j.state.is_final for j in jobs.values())


@pytest.mark.parametrize(("err", "code"), [
    ("qstat: Unknown Job Id 99.pbsserver\n", 153),
    ("qstat: Unknown Job Id Error 99.torqueserver\n", 153),
    ("qstat: 1240.pbsserver Job has finished, use -x or -H to obtain historical job information\n",
     35),
    ("", 153),   # Slurm's wrapper: nothing printed, `$rc = 153` (/usr/bin/qstat)
])
def test_unknown_job(err: str, code: int) -> None:
    assert pbs.is_unknown_job_error(err, code)
    assert not pbs.controller_unavailable(err, code)


def test_empty_stderr_is_not_unknown_job_without_153() -> None:
    assert not pbs.is_unknown_job_error("", 1)
    assert not pbs.is_unknown_job_error("")


@pytest.mark.parametrize("err", [
    "Connection refused\nqstat: cannot connect to server pbsserver (errno=15010)\n",
    "Cannot connect to default server host 'torqueserver' - check pbs_server daemon\n",
    captured("torque_wrapper_qstat_controller_down_22.05.txt"),
    captured("slurm_squeue_controller_down_22.05.txt"),
])
def test_controller_down(err: str) -> None:
    assert pbs.controller_unavailable(err, 8)


def test_wrapper_has_no_history_captured() -> None:
    err = captured("torque_wrapper_qstat_x_unsupported_22.05.txt")
    assert pbs.history_unsupported(err, 2)
    assert not pbs.controller_unavailable(err, 2)
    assert not pbs.is_unknown_job_error(err, 2)


# ---- OpenPBS 23.06, captured live on the testbed (tests/testbed/capture_openpbs.py) -------------


def captured_run(name: str) -> CommandResult:
    """A captured command: argv, exit status and stderr from its '## ' header, then its stdout."""
    header, stdout = (CAPTURED / name).read_text().split("## ---\n", 1)
    fields = dict(line[3:].split(": ", 1) for line in header.splitlines()
                  if line.startswith(("## command: ", "## exit: ", "## stderr: ")))
    stderr = "" if fields["stderr"] == "(none)" else fields["stderr"] + "\n"
    return CommandResult(fields["command"].split(), int(fields["exit"]), stdout, stderr)


def test_openpbs_one_query_for_many_jobs() -> None:
    jobs = pbs.parse_status(captured_run("openpbs_qstat_f_active.txt").stdout)
    assert {j: s.state for j, s in jobs.items()} == {
        "0.login1": JobState.RUNNING, "2.login1": JobState.PENDING, "3.login1": JobState.HELD}
    assert {s.partition for s in jobs.values()} == {"workq"}


def test_openpbs_wrapped_values_keep_their_spaces() -> None:
    """qstat breaks a long value at 78 columns, inside a word or before a space (src/cmds/qstat.c,
    prt_attr): the continuation is taken as it is after its one tab, not stripped."""
    attrs = parse_qstat_full(captured_run("openpbs_qstat_xf_deleted.txt").stdout)["0.login1"]
    assert attrs["comment"].endswith(") and terminated by hpcuser@login1")
    assert attrs["Submit_arguments"] == "-N hpcnb -l select=1:ncpus=8 -l walltime=00:10:00 -- /bin/sleep 300"
    assert ",PBS_O_PATH=/opt/hpcnb-testbed/openpbs/bin:/usr/local/bin:/usr/bin:/bin:/usr/games," in (
        attrs["Variable_List"])


def test_openpbs_unknown_job_id() -> None:
    run = captured_run("openpbs_qstat_f_unknown.txt")
    assert (run.exit_status, run.stdout, run.stderr) == (
        EXIT_UNKNOWN_JOB, "", "qstat: Unknown Job Id 999999.login1\n")
    assert pbs.is_unknown_job_error(run.stderr, run.exit_status)
    assert not pbs.controller_unavailable(run.stderr, run.exit_status)
    assert pbs.parse_status(run.stdout) == {}


def test_openpbs_finished_job_without_x_is_for_the_history() -> None:
    run = captured_run("openpbs_qstat_f_finished.txt")
    assert run.exit_status == EXIT_FINISHED_JOB and run.stdout == ""
    assert "5.login1 Job has finished, use -x" in run.stderr
    assert pbs.is_unknown_job_error(run.stderr, run.exit_status)
    assert not pbs.controller_unavailable(run.stderr, run.exit_status)


class ReplayRemote:
    """The Remote protocol answering each command with a captured run (by its first words)."""

    def __init__(self, answers: dict[tuple[str, ...], CommandResult]) -> None:
        self.answers, self.asked = answers, []

    def run(self, argv, *, stdin=None, timeout=60.0) -> CommandResult:
        self.asked.append(list(argv))
        key = next(k for k in self.answers if tuple(argv[:len(k)]) == k)
        return replace(self.answers[key], argv=list(argv))


def test_openpbs_running_and_finished_in_one_query_then_the_history() -> None:
    """qstat -f exits 35 for the finished job but prints the running one: both are known after
    one queue query and one history query (hpcnb/batch.py)."""
    remote = ReplayRemote({
        ("qstat", "-f"): captured_run("openpbs_qstat_f_running_and_finished.txt"),
        ("env", "QSCACHE_BYPASS=1", "qstat", "-x", "-f"): captured_run("openpbs_qstat_xf_finished.txt"),
    })
    batch = BatchSystem(pbs, lambda: remote, cluster="testbed-openpbs")
    statuses = batch.statuses(["1.login1", "5.login1"])
    assert {j: s.state for j, s in statuses.items()} == {
        "1.login1": JobState.RUNNING, "5.login1": JobState.COMPLETED}
    assert statuses["1.login1"].node == "node02"
    assert remote.asked == [["qstat", "-f", "1.login1", "5.login1"],
                            ["env", "QSCACHE_BYPASS=1", "qstat", "-x", "-f", "5.login1"]]


def test_openpbs_history_of_every_ended_kind() -> None:
    ended = {name: pbs.parse_history(captured_run(f"openpbs_qstat_xf_{name}.txt").stdout)
             for name in ("finished", "failed", "deleted", "deleted_held", "array")}
    assert {name: [(s.state, s.exit_code) for s in jobs.values()] for name, jobs in ended.items()} == {
        "finished": [(JobState.COMPLETED, "0")], "failed": [(JobState.FAILED, "3")],
        "deleted": [(JobState.CANCELLED, "271")], "deleted_held": [(JobState.CANCELLED, None)],
        "array": [(JobState.COMPLETED, "0")]}


def test_a_job_that_just_started_has_its_whole_walltime_left() -> None:
    # OpenPBS, before its MoM's first usage report: stime is set, resources_used is not.
    text = captured("openpbs_qstat_f_running.txt")
    fresh = "\n".join(line for line in text.splitlines() if "resources_used." not in line)
    (status,) = pbs.parse_status(fresh).values()
    assert status.state is JobState.RUNNING
    limit = next(line.split("=", 1)[1].strip() for line in text.splitlines()
                 if "Resource_List.walltime" in line)
    assert status.time_left_s == parse_duration(limit)
