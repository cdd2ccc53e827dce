"""SGEScheduler (Son of Grid Engine 8.1.9): argv builders, parsers and the job script, against
output captured from real daemons: the testbed's qmaster and execds (sge_*_testbed.txt, by
tests/testbed/capture_sge.py, hpcnb's own status and history queries among them) and a single-host
run (sge_*_recipe.txt, copied with a provenance header from ../shared/gridengine/captures/)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from fakes import CAPTURED, captured

from hpcnb.config import ClusterConfig
from hpcnb.remote import CommandResult
from hpcnb.render import render_script
from hpcnb.request import build_request
from hpcnb.schedulers import SCHEDULERS, JobState, get_scheduler
from hpcnb.schedulers.sge import (
    STATE_ORDER,
    map_state,
    node_of,
    parse_qacct,
    sge_mem_per_slot,
)

sge = get_scheduler("sge")
DIRECTIVE = re.compile(r"^#\$ -[A-Za-z0-9 ._:=/@+,%-]+\Z")



def test_identity_and_registry() -> None:
    assert SCHEDULERS["sge"] is type(sge)
    assert (sge.name, sge.template, sge.directive_prefix) == ("sge", "sge.sh.j2", "#$")


def test_every_capture_says_how_it_was_taken() -> None:
    files = sorted(CAPTURED.glob("sge_*"))
    assert files
    for path in files:
        head = path.read_text().split("## ---\n", 1)[0]
        assert head.startswith("## ") and "## command: " in head, path.name


@pytest.mark.parametrize(("out", "job_id"), [("9\n", "9"), ("123\n", "123"), ("9.1-10:1\n", "9")])
def test_parse_job_id(out: str, job_id: str) -> None:
    assert sge.parse_job_id(out) == job_id


def test_parse_job_id_captured() -> None:
    assert sge.parse_job_id(captured("sge_qsub_terse_recipe.txt")) == "9"


@pytest.mark.parametrize("out", ["", "Unable to run job: Job was rejected.\nExiting.\n", "0\n", "-1\n"])
def test_parse_job_id_garbage(out: str) -> None:
    with pytest.raises(ValueError):
        sge.parse_job_id(out)


def test_argv() -> None:
    submit = sge.submit_argv()
    assert submit[:2] == ["sh", "-c"] and "qsub -terse" in submit[2] and len(submit) == 3
    argv = sge.status_argv(["9", "10"], "alice")
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["sh", "-u", "alice"]
    assert "qstat -r -xml" in argv[2]
    assert sge.status_argv([], None)[3:] == ["sh"]
    history = sge.history_argv(["9", "10"])
    assert history is not None and history[3:] == ["sh", "9", "10"] and "qacct -j" in history[2]
    assert sge.history_argv([]) is None
    cancel = sge.cancel_argv("9")
    assert cancel[:2] == ["sh", "-c"] and "qdel" in cancel[2] and cancel[3:] == ["sh", "9"]


@pytest.mark.parametrize("bad", ["-u", "9 10", "9,10", "", "all", "9.1", "0"])
def test_job_ids_are_never_options(bad: str) -> None:
    with pytest.raises(ValueError):
        sge.cancel_argv(bad)


def test_status_and_history_run_in_a_shell(tmp_path: Path) -> None:
    """The sh -c programs, with fake qstat/qacct: the clock line comes first; qacct's misses are
    not an error."""
    (tmp_path / "qstat").write_text('#!/bin/sh\necho "<job_info/>"; echo "args: $*" >&2\n')
    (tmp_path / "qacct").write_text('#!/bin/sh\n[ "$2" = 1 ] && echo "jobnumber $2" && exit 0\n'
                                    'echo "error: job id $2 not found" >&2; exit 1\n')
    for f in ("qstat", "qacct"):
        (tmp_path / f).chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(sge.status_argv(["1"], "bob"), capture_output=True, text=True, env=env,
                         check=True)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\n<job_info/>\n\Z", out.stdout)
    assert out.stderr == "args: -r -xml -u bob\n"
    hist = subprocess.run(sge.history_argv(["1", "2"]) or [], capture_output=True, text=True,
                          env=env, check=False)
    assert hist.returncode == 0 and hist.stdout == "jobnumber 1\n"
    assert sge.is_unknown_job_error(hist.stderr, hist.returncode)


def fake_commands(tmp_path: Path, **scripts: str) -> dict[str, str]:
    """PATH with fake SGE commands (name -> sh body) first."""
    for name, body in scripts.items():
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}


@pytest.mark.parametrize(("body", "code", "out", "err"), [
    ("ok", 0, "14\n", ""),
    # a refusal (sge_qsub_controller_down_testbed.txt has the real lines): "Exiting." goes
    ("no queue", 1, "", "Unable to run job: error: no suitable queues\n"),
    ("warning", 0, "15\n", 'warning: "-w" option has already been set, overriding previous setting\n'),
])
def test_submit_runs_in_a_shell(tmp_path: Path, body: str, code: int, out: str, err: str) -> None:
    """The script reaches qsub on stdin; its exit status and stdout are qsub's; its stderr without
    qsub's closing "Exiting.", so the reason is the last line hpcnb quotes."""
    env = fake_commands(tmp_path, qsub='s=$(cat); echo "args: $*" >"$0.args"; case "$s" in\n'
                        '"no queue") echo "Unable to run job: error: no suitable queues" >&2; '
                        'echo Exiting. >&2; exit 1;;\n'
                        'warning) echo \'warning: "-w" option has already been set, overriding '
                        'previous setting\' >&2; echo 15;;\n*) echo 14;; esac')
    proc = subprocess.run(sge.submit_argv(), input=body, capture_output=True, text=True, env=env,
                          check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (code, out, err)
    assert (tmp_path / "qsub.args").read_text() == "args: -terse\n"


def test_cancel_runs_in_a_shell(tmp_path: Path) -> None:
    """qdel's verdict, on its stdout, reaches stderr, where hpcnb looks for 'does not exist'."""
    run = captured_run("sge_qdel_unknown_testbed.txt")
    env = fake_commands(tmp_path, qdel=f"printf %s {shlex.quote(run.stdout)}; exit {run.exit_status}")
    proc = subprocess.run(sge.cancel_argv("999999"), capture_output=True, text=True, env=env,
                          check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", 'denied: job "999999" does not exist\n')
    assert sge.is_unknown_job_error(proc.stderr, proc.returncode)


def test_state_map() -> None:
    cases = {"qw": JobState.PENDING, "hqw": JobState.HELD, "hRwq": JobState.HELD,
             "r": JobState.RUNNING, "Rr": JobState.RUNNING, "t": JobState.PENDING,
             "Rt": JobState.PENDING, "s": JobState.SUSPENDED, "S": JobState.SUSPENDED,
             "T": JobState.SUSPENDED, "tS": JobState.SUSPENDED, "Eqw": JobState.HELD,
             "dr": JobState.COMPLETING, "dt": JobState.COMPLETING, "dRr": JobState.COMPLETING,
             "z": JobState.COMPLETED, "": JobState.UNKNOWN, "X": JobState.UNKNOWN}
    for raw, state in cases.items():
        assert map_state(raw) is state, raw
    assert {letter for letter, _ in STATE_ORDER} == set("EdhsSTrtwqz")


def test_node_of() -> None:
    assert node_of("all.q@node01") == "node01"
    assert node_of("") is None and node_of(None) is None and node_of("all.q") is None


def test_parse_status_running_recipe() -> None:
    jobs = sge.parse_status(captured("sge_qstat_xml_running_recipe.txt"))
    job = jobs["9"]
    assert (job.state, job.raw_state, job.name, job.node, job.partition) == (
        JobState.RUNNING, "r", "test", "vm", "all.q")
    assert job.time_left_s is None  # plain -xml: no h_rt, no clock


def test_parse_status_queued_recipe() -> None:
    jobs = sge.parse_status(captured("sge_qstat_xml_queued_recipe.txt"))
    assert set(jobs) == {"9", "10", "11"}
    assert jobs["11"].state is JobState.PENDING and jobs["11"].node is None
    assert jobs["10"].node == "vm"


def test_time_left_from_h_rt_and_the_hosts_clock() -> None:
    out = ("2026-12-01T13:34:46\n" + captured("sge_qstat_xml_running_recipe.txt").replace(
        "<slots>1</slots>", '<slots>1</slots>\n      <hard_request name="h_rt" '
        'resource_contribution="0.000000">300</hard_request>'))
    assert sge.parse_status(out)["9"].time_left_s == 240


@pytest.mark.parametrize("out", ["", "garbage", "<job_info", "error: commlib error\n"])
def test_parse_status_nothing_to_guess(out: str) -> None:
    assert sge.parse_status(out) == {}


def test_history_recipe() -> None:
    cases = {
        "sge_qacct_completed_recipe.txt": ("9", JobState.COMPLETED, "0"),
        "sge_qacct_failed_recipe.txt": ("12", JobState.FAILED, "3"),
        "sge_qacct_hrt_recipe.txt": ("13", JobState.TIMEOUT, "137"),
        "sge_qacct_qdel_running_recipe.txt": ("10", JobState.CANCELLED, "137"),
    }
    for name, (job_id, state, code) in cases.items():
        job = sge.parse_history(captured(name))[job_id]
        assert (job.state, job.exit_code, job.node) == (state, code, "vm"), name
    assert "h_rt" in (sge.parse_history(captured("sge_qacct_hrt_recipe.txt"))["13"].reason or "")
    # deleted while queued: no record at all, only stderr
    assert sge.parse_history(captured("sge_qacct_qdel_queued_recipe.txt")) == {}


def test_history_last_record_of_an_id_wins() -> None:
    text = captured("sge_qacct_failed_recipe.txt") + captured("sge_qacct_completed_recipe.txt").replace(
        "jobnumber    9 ", "jobnumber    12 ")
    assert parse_qacct(text)["12"]["exit_status"] == "0"


def test_h_vmem_limit_but_not_h_rt_is_a_failure() -> None:
    text = captured("sge_qacct_hrt_recipe.txt").replace("ru_wallclock 6s", "ru_wallclock 2s")
    assert sge.parse_history(text)["13"].state is JobState.FAILED


@pytest.mark.parametrize(("err", "code"), [
    (captured("sge_qacct_qdel_queued_recipe.txt"), 1),
    (captured("sge_qstat_j_ended_recipe.txt"), 1),
    ('denied: job "77" does not exist\n', 1),
])
def test_unknown_job(err: str, code: int) -> None:
    assert sge.is_unknown_job_error(err, code)


def test_not_an_unknown_job() -> None:
    assert not sge.is_unknown_job_error("error: commlib error: got select error\n", 1)


@pytest.mark.parametrize("err", [
    "error: commlib error: got select error (Connection refused)\n"
    "unable to contact qmaster using port 6444 on host \"login1\"\n",
])
def test_controller_down(err: str) -> None:
    assert sge.controller_unavailable(err, 1)
    assert not sge.controller_unavailable(err, 0)


def test_exit100_capture_is_an_error_state() -> None:
    line = next(ln for ln in captured("sge_qstat_exit100_recipe.txt").splitlines() if "rc100" in ln)
    assert map_state(line.split()[4]) is JobState.HELD


@pytest.mark.parametrize(("mb", "slots", "text"), [
    (16384, 4, "4G"), (1000, 3, "334M"), (4096, None, "4G"), (1536, 1, "1536M")])
def test_mem_per_slot(mb: int, slots: int | None, text: str) -> None:
    assert sge_mem_per_slot(mb, slots) == text


def test_parse_queues() -> None:
    assert sge.parse_queues("all.q\ngpu.q\n") == (["all.q", "gpu.q"], None)


def sge_cluster(**values: object) -> ClusterConfig:
    base: dict = {"name": "gebox", "scheduler": "sge", "source": "test", "login_host": "login.example.org"}
    return ClusterConfig(**{**base, **values})  # type: ignore[arg-type]


def directives(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#$")]


def bash_n(script: str) -> None:
    bash = shutil.which("bash")
    assert bash
    proc = subprocess.run([bash, "-n"], input=script, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_rendered_script_directives_exact() -> None:
    cfg = sge_cluster(extra_directives=("-l arch=lx-amd64",))
    r = build_request(cfg, partition="gpu.q", account="proj1", cpus=4, mem="16G", gpus=2, hours=26,
                      name="nb")
    script = render_script(cfg, r, "sge")
    bash_n(script)
    assert directives(script) == [
        "#$ -N nb", "#$ -l h_rt=26:00:00", "#$ -S /bin/bash", "#$ -o /dev/null", "#$ -j y",
        "#$ -w e", "#$ -q gpu.q", "#$ -P proj1", "#$ -pe smp 4", "#$ -l h_vmem=4G", "#$ -l gpu=2",
        "#$ -l arch=lx-amd64",
    ]
    assert all(DIRECTIVE.match(line) for line in directives(script))
    assert '\nHPCNB_JOB_ID="${JOB_ID:-}"\n' in script


def test_rendered_script_minimal() -> None:
    cfg = sge_cluster()
    script = render_script(cfg, build_request(cfg, time="00:30:00"), "sge")
    bash_n(script)
    assert directives(script) == ["#$ -N hpcnb", "#$ -l h_rt=00:30:00", "#$ -S /bin/bash",
                                  "#$ -o /dev/null", "#$ -j y", "#$ -w e"]


@pytest.mark.parametrize(("jupyter_exit", "job_exit"), [(100, 1), (99, 1), (0, 0), (3, 3)])
def test_job_never_exits_99_or_100(tmp_path: Path, jupyter_exit: int, job_exit: int) -> None:
    """The rendered script run by bash, with a 'python' that exits as Jupyter might: 99 and 100
    (requeue, error state in SGE) must not reach sge_shepherd."""
    fake = tmp_path / "fakepython"
    fake.write_text(f"#!/bin/sh\nexit {jupyter_exit}\n")
    fake.chmod(0o755)
    cfg = sge_cluster(python=str(fake))
    script = render_script(cfg, build_request(cfg), "sge")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "JOB_ID": "42"}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          check=False, timeout=30)
    assert proc.returncode == job_exit, proc.stderr
    assert (tmp_path / ".hpcnb" / "sessions").is_dir()


# ---- the testbed's qmaster and execds (tests/testbed/capture_sge.py) -----------------------------


def captured_run(name: str) -> CommandResult:
    """A captured command: argv, exit status and stderr from its '## ' header, then its stdout."""
    header, stdout = (CAPTURED / name).read_text().split("## ---\n", 1)
    fields = dict(line[3:].split(": ", 1) for line in header.splitlines()
                  if line.startswith(("## command: ", "## exit: ", "## stderr: ")))
    stderr = "" if fields["stderr"] == "(none)" else fields["stderr"].replace(" | ", "\n") + "\n"
    return CommandResult(shlex.split(fields["command"]), int(fields["exit"]), stdout, stderr)


def capture_jobs(name: str) -> dict[str, str]:
    """The '## jobs: what=ID ...' line of a capture: which job is which."""
    line = next(ln for ln in (CAPTURED / name).read_text().splitlines() if ln.startswith("## jobs: "))
    return dict(word.split("=", 1) for word in line[len("## jobs: "):].split())


def test_testbed_status_one_query_for_every_kind_of_job() -> None:
    run = captured_run("sge_status_queue_testbed.txt")
    assert run.argv == sge.status_argv(["1"], "hpcuser")
    ids = capture_jobs("sge_status_queue_testbed.txt")
    jobs = sge.parse_status(run.stdout)
    assert set(jobs) == set(ids.values())
    gpus, smp, waiting, held, error = (jobs[ids[k]] for k in ("gpus", "smp", "waiting", "held", "error"))
    # h_rt minus (the clock line - JAT_start_time): 600 - 4, 1200 - 4
    assert (gpus.state, gpus.node, gpus.partition, gpus.time_left_s) == (
        JobState.RUNNING, "node02", "all.q", 596)
    assert (smp.state, smp.node, smp.time_left_s) == (JobState.RUNNING, "node01", 1196)
    assert (waiting.state, waiting.node, waiting.time_left_s) == (JobState.PENDING, None, 300)
    assert (held.state, held.raw_state) == (JobState.HELD, "hqw")
    assert (error.state, error.raw_state) == (JobState.HELD, "Eqw")
    assert "error state" in (error.reason or "")
    assert {j.name for j in jobs.values()} == {"hpcnb"}


def test_testbed_status_when_every_job_has_ended() -> None:
    assert sge.parse_status(captured_run("sge_status_ended_testbed.txt").stdout) == {}


def test_testbed_history_says_how_each_job_ended() -> None:
    run = captured_run("sge_history_testbed.txt")
    ids = capture_jobs("sge_history_testbed.txt")
    assert run.argv == sge.history_argv(run.argv[4:]) and run.exit_status == 0
    jobs = sge.parse_history(run.stdout)
    expected = {"completed": (JobState.COMPLETED, "0"), "failed": (JobState.FAILED, "3"),
                "hrt": (JobState.TIMEOUT, "137"), "deleted_running": (JobState.CANCELLED, "137"),
                "deleted_running_smp": (JobState.CANCELLED, "137")}
    for what, (state, code) in expected.items():
        job = jobs[ids[what]]
        assert (job.state, job.exit_code, job.partition) == (state, code, "all.q"), what
        assert job.node in {"node01", "node02"}
    # deleted while queued: no record, only "error: job id N not found" on stderr (fact 8)
    assert ids["deleted_queued"] not in jobs
    assert sge.is_unknown_job_error(run.stderr, 1)


def test_testbed_submission_and_queues() -> None:
    assert sge.parse_job_id(captured_run("sge_qsub_terse_testbed.txt").stdout) == "14"
    assert sge.parse_queues(captured_run("sge_qconf_sql_testbed.txt").stdout) == (["all.q"], None)


@pytest.mark.parametrize("name", ["sge_qstat_j_unknown_testbed.txt", "sge_qdel_unknown_testbed.txt",
                                  "sge_qacct_unknown_testbed.txt"])
def test_testbed_unknown_job(name: str) -> None:
    run = captured_run(name)
    text = run.stderr + run.stdout  # qdel says it on stdout (hpcnb's cancel moves it to stderr)
    assert run.exit_status == 1
    assert sge.is_unknown_job_error(text, run.exit_status)
    assert not sge.controller_unavailable(text, run.exit_status)


@pytest.mark.parametrize("name", ["sge_status_controller_down_testbed.txt",
                                  "sge_qdel_controller_down_testbed.txt",
                                  "sge_qsub_controller_down_testbed.txt"])
def test_testbed_controller_down(name: str) -> None:
    run = captured_run(name)
    assert run.exit_status == 1
    assert sge.controller_unavailable(run.stderr, run.exit_status)
    assert not sge.is_unknown_job_error(run.stderr + run.stdout, run.exit_status)
    assert sge.parse_status(run.stdout) == {}
