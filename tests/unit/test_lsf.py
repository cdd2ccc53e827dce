"""LSFScheduler: argv builders, parsers and the job script, against samples composed from IBM's
LSF 10.1 documentation (tests/unit/captured/lsf_*_doc.txt; no LSF has been run)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import CAPTURED, captured

from hpcnb.config import ClusterConfig, load_cluster
from hpcnb.errors import UsageError
from hpcnb.render import render_script
from hpcnb.request import build_request
from hpcnb.schedulers import SCHEDULERS, JobState, get_scheduler
from hpcnb.schedulers.lsf import (
    BJOBS_FORMAT,
    STATE_MAP,
    first_host,
    lsf_mem,
    lsf_runlimit,
    map_state,
    time_left,
)

lsf = get_scheduler("lsf")
DIRECTIVE = re.compile(r"^#BSUB -[A-Za-z0-9 ._:=/@+,%-]+\Z")



def test_identity_and_registry() -> None:
    assert SCHEDULERS["lsf"] is type(lsf)
    assert (lsf.name, lsf.template, lsf.directive_prefix) == ("lsf", "lsf.sh.j2", "#BSUB")
    assert (lsf.partition_flags, lsf.account_flags, lsf.gpu_flags) == (("-q",), ("-P",), ("num",))
    assert lsf.commands == ("bsub", "bjobs", "bkill") and lsf.optional_commands == ("bqueues",)
    assert lsf.queue_word == "queue"


def test_every_sample_names_its_doc_page() -> None:
    samples = sorted(CAPTURED.glob("lsf_*_doc.txt"))
    assert len(samples) >= 6
    for path in samples:
        first = path.read_text().splitlines()[0]
        assert first.startswith("## ") and ("ibm.com/docs" in first or "IBM Support" in first), path.name


# ---- submit ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("out", "job_id"), [
    (captured("lsf_bsub_default_queue_doc.txt"), "2812"),
    ("Job <1234> is submitted to queue <normal>.\n", "1234"),
    ("Job <1234> is submitted to queue <gpu-a100.short>.", "1234"),
    ("esub: project checked\nJob <77> is submitted to default queue <normal>.\n", "77"),
    ("  Job <9> is submitted to queue <night>.  \n\n", "9"),
])
def test_parse_job_id(out: str, job_id: str) -> None:
    assert lsf.parse_job_id(out) == job_id


@pytest.mark.parametrize("out", [
    "", "\n", "Job not submitted.\n", "Request aborted by esub. Job not submitted.\n",
    "Job <abc> is submitted to queue <normal>.\n", "Job <0> is submitted to queue <normal>.\n",
    "Job <12> is being terminated\n", "1234\n",
])
def test_parse_job_id_garbage(out: str) -> None:
    with pytest.raises(ValueError):
        lsf.parse_job_id(out)


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs sh")
def test_submit_argv_gives_the_script_on_stdin(tmp_path: Path) -> None:
    """`bsub` with no command reads the job from stdin; a fake bsub shows what it is given."""
    fake = tmp_path / "bsub"
    fake.write_text('#!/bin/sh\n[ "$#" -eq 0 ] || exit 9\ncat >"$0.in"\n'
                    'echo "Job <42> is submitted to default queue <normal>."\n')
    fake.chmod(0o755)
    proc = subprocess.run(lsf.submit_argv(), input="#!/bin/bash -l\n#BSUB -J x\necho hi\n",
                          capture_output=True, text=True, check=False,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "bsub.in").read_text() == "#!/bin/bash -l\n#BSUB -J x\necho hi\n"
    assert lsf.parse_job_id(proc.stdout) == "42"


# ---- argv ------------------------------------------------------------------------------------


def test_argv() -> None:
    assert lsf.submit_argv() == ["bsub"]
    assert lsf.status_argv(["1", "2[3]"], "alice") == [
        "bjobs", "-a", "-o", BJOBS_FORMAT, "-json", "1", "2[3]"]
    assert BJOBS_FORMAT == ("jobid jobindex stat queue exec_host time_left estimated_start_time "
                            "pend_reason exit_code exit_reason job_name")
    assert lsf.status_argv([], "alice")[-2:] == ["-u", "alice"]
    assert lsf.status_argv([], None) == ["bjobs", "-a", "-o", BJOBS_FORMAT, "-json"]
    assert lsf.history_argv(["1"]) is None   # status already asks with -a (CLEAN_PERIOD)
    assert lsf.cancel_argv("7") == ["bkill", "7"]
    assert lsf.cancel_argv("7[2]") == ["bkill", "7[2]"]
    assert lsf.queues_argv(load_cluster("local")) == ["bqueues", "-w"]


@pytest.mark.parametrize("bad", ["0", "00", "0[1]", "-1", "-u all", "1 2", "1,2", "", "abc", "1[0]",
                                 "1[", "1[2-3]", "1.srv"])
def test_job_ids_are_never_options_nor_all_jobs(bad: str) -> None:
    # `bkill 0` kills every job of the user (bkill.1.html): never let it through.
    with pytest.raises(ValueError):
        lsf.cancel_argv(bad)
    with pytest.raises(ValueError):
        lsf.status_argv([bad], None)


# ---- states and fields -----------------------------------------------------------------------


def test_state_map_is_complete() -> None:
    assert set(STATE_MAP) == {"PEND", "PROV", "PSUSP", "RUN", "USUSP", "SSUSP", "DONE", "EXIT",
                              "UNKWN", "WAIT", "ZOMBI"}
    assert map_state("WHATEVER") is JobState.UNKNOWN
    assert map_state("EXIT", "TERM_OWNER: job killed by owner") is JobState.CANCELLED
    assert map_state("EXIT", "TERM_CPULIMIT: job killed after reaching LSF CPU usage limit") \
        is JobState.FAILED
    assert map_state("DONE", "TERM_OWNER: job killed by owner") is JobState.COMPLETED


@pytest.mark.parametrize(("text", "seconds"), [
    ("0:30 L", 1800), ("1:00 L", 3600), ("26:05 L", 93900), ("0:30", 1800), ("0:30L", 1800),
    ("00:29:30 L", 1770), ("2:10 E", None), ("0:00 X", None), ("", None), ("-", None), (None, None),
    ("UNLIMITED", None), ("1:2:3:4", None),
])
def test_time_left(text: str | None, seconds: int | None) -> None:
    assert time_left(text) == seconds


@pytest.mark.parametrize(("text", "host"), [
    ("4*node01:4*node02", "node01"), ("node03:node03", "node03"), ("node07", "node07"),
    ("16*gpu-a100-01", "gpu-a100-01"), ("node01 node02", "node01"), ("", None), ("-", None),
    (None, None),
])
def test_first_host(text: str | None, host: str | None) -> None:
    assert first_host(text) == host


# (job id, state, raw, queue, node, time left, reason contains, expected start, exit code)
TABLE = [
    ("1201", JobState.PENDING, "PEND", "normal", None, 3600, "New job is waiting for scheduling",
     "Jun 10 14:30", None),
    ("1202", JobState.PENDING, "PROV", "normal", "node07", 3600, None, None, None),
    ("1203", JobState.HELD, "PSUSP", "normal", None, 1800, "suspended by the user while pending",
     None, None),
    ("1204", JobState.RUNNING, "RUN", "gpu", "node01", 1800, None, None, None),
    ("1205", JobState.RUNNING, "RUN", "normal", "node03", None, None, None, None),
    ("1206", JobState.SUSPENDED, "USUSP", "normal", "node04", 2700, None, None, None),
    ("1207", JobState.SUSPENDED, "SSUSP", "normal", "node05", 2700, None, None, None),
    ("1208", JobState.COMPLETED, "DONE", "normal", "node01", None, None, None, None),
    ("1209", JobState.FAILED, "EXIT", "normal", "node02", None, None, None, "3"),
    ("1210", JobState.CANCELLED, "EXIT", "normal", "node02", None, "TERM_OWNER", None, "130"),
    ("1211", JobState.TIMEOUT, "EXIT", "normal", "node01", None, "TERM_RUNLIMIT", None, "140"),
    ("1212", JobState.OUT_OF_MEMORY, "EXIT", "normal", "node01", None, "TERM_MEMLIMIT", None, "137"),
    ("1213", JobState.UNKNOWN, "UNKWN", "normal", "node06", 1200, None, None, None),
    ("1214", JobState.PENDING, "WAIT", "chunk", "node08", 600, None, None, None),
    ("1215", JobState.COMPLETING, "ZOMBI", "normal", "node06", None, None, None, None),
    ("1216[2]", JobState.RUNNING, "RUN", "normal", "node09", None, None, None, None),
    ("1217", JobState.PREEMPTED, "EXIT", "normal", "node10", None, "TERM_PREEMPT", None, "143"),
]


@pytest.mark.parametrize("row", TABLE, ids=[r[0] for r in TABLE])
def test_parse_status(row: tuple) -> None:
    job_id, state, raw, queue, node, left, reason, start, exit_code = row
    st = lsf.parse_status(captured("lsf_bjobs_json_doc.txt"))[job_id]
    assert (st.job_id, st.state, st.raw_state, st.partition, st.node) == (job_id, state, raw, queue, node)
    assert (st.time_left_s, st.expected_start, st.exit_code) == (left, start, exit_code)
    assert (reason is None and st.reason is None) or (reason and reason in (st.reason or ""))


def test_parse_status_whole_sample() -> None:
    jobs = lsf.parse_status(captured("lsf_bjobs_json_doc.txt"))
    assert len(jobs) == 17 and "1216" not in jobs
    assert jobs["1205"].name == "nb-1 with spaces" and jobs["1216[2]"].name == "hpcnb[2]"
    assert jobs["1201"].reason == "New job is waiting for scheduling"   # the ';' goes
    assert {j.state for j in jobs.values()} >= {
        JobState.PENDING, JobState.HELD, JobState.RUNNING, JobState.SUSPENDED, JobState.COMPLETED,
        JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT, JobState.OUT_OF_MEMORY,
        JobState.UNKNOWN, JobState.COMPLETING, JobState.PREEMPTED}


def test_hms_time_left() -> None:
    st = lsf.parse_status(captured("lsf_bjobs_json_hms_doc.txt"))["1301"]
    assert (st.state, st.node, st.time_left_s) == (JobState.RUNNING, "node11", 1770)


@pytest.mark.parametrize("out", [
    "", "No unfinished job found\n", "not json {", '{"COMMAND":"bjobs","JOBS":0,"RECORDS":[]}',
    '{"COMMAND":"bjobs","RECORDS":"x"}', "[1, 2]",
    # an entry that is not a job (its shape for an unknown id is not documented): skipped
    '{"COMMAND":"bjobs","JOBS":1,"RECORDS":[{"JOBID":"5","ERROR":"Job <5> is not found"}]}',
])
def test_parse_status_nothing_to_guess(out: str) -> None:
    assert lsf.parse_status(out) == {}


def test_parse_status_skips_text_before_the_json() -> None:
    out = "Job <99> is not found\n" + captured("lsf_bjobs_json_hms_doc.txt")
    assert set(lsf.parse_status(out)) == {"1301"}


# ---- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(("err", "code"), [
    (captured("lsf_bjobs_not_found_doc.txt"), 255),
    (captured("lsf_bjobs_not_found_doc.txt"), 0),   # LSB_BJOBS_CONSISTENT_EXIT_CODE=N
    ("Job <1234[2]> is not found\n", 255),
    ("Job <1234>: No matching job found\n", 255),   # bkill (not confirmed from IBM's pages)
    ("Job <1234>: Job has already finished\n", 255),
    ("", 255),                                      # -json: the text may be in the JSON only
])
def test_unknown_job(err: str, code: int) -> None:
    assert lsf.is_unknown_job_error(err, code)
    assert not lsf.controller_unavailable(err, code)


@pytest.mark.parametrize(("err", "code"), [("", 1), ("", None), ("Queue <x> is not found", 255),
                                           ("bjobs: illegal option -- json", 255)])
def test_not_an_unknown_job(err: str, code: int | None) -> None:
    assert not lsf.is_unknown_job_error(err, code)


@pytest.mark.parametrize("err", [
    captured("lsf_bjobs_lsf_down_doc.txt"),
    captured("lsf_bjobs_daemon_not_responding_doc.txt"),
    "Cannot connect to LSF. Please wait...\n",            # LSB_MBD_CONNECT_FAIL_MSG's default
    "LSF is processing your request. Please wait...\n",   # LSB_MBD_BUSY_MSG's default
    "LSF daemon (LIM) not responding ... still trying\n",  # LSB_API_VERBOSE=Y
])
def test_controller_down(err: str) -> None:
    assert lsf.controller_unavailable(err, 255)
    assert not lsf.controller_unavailable(err, 0)   # it answered after retrying
    assert not lsf.is_unknown_job_error(err, 255)


def test_parse_queues() -> None:
    names, default = lsf.parse_queues(captured("lsf_bqueues_w_doc.txt"))
    assert names == ["admin", "owners", "priority", "night", "short", "normal", "idle"]
    assert default is None
    assert lsf.parse_queues("") == ([], None)


# ---- formats and the job script --------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (60, "1"), (61, "2"), (1800, "30"), (3540, "59"), (3600, "1:00"), (5400, "1:30"),
    (93600, "26:00"), (365 * 86400, "8760:00"),
])
def test_runlimit(seconds: int, text: str) -> None:
    assert lsf_runlimit(seconds) == text


@pytest.mark.parametrize(("mb", "text"), [(16384, "16GB"), (500, "500MB"), (1536, "1536MB")])
def test_mem(mb: int, text: str) -> None:
    assert lsf_mem(mb) == text


def lsf_cluster(**values: object) -> ClusterConfig:
    base: dict = {"name": "bluebox", "scheduler": "lsf", "source": "test", "login_host": "login.example.org",
                  "partition_flag": "-q", "account_flag": "-P", "gpu_flag": "num"}
    return ClusterConfig(**{**base, **values})  # type: ignore[arg-type]


def directives(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#BSUB")]


def bash_n(script: str) -> None:
    bash = shutil.which("bash")
    assert bash
    proc = subprocess.run([bash, "-n"], input=script, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_rendered_script_directives_exact() -> None:
    cfg = lsf_cluster(extra_directives=("-x",))
    r = build_request(cfg, partition="gpu", account="proj1", cpus=4, mem="16G", gpus=2, hours=26,
                      name="nb")
    script = render_script(cfg, r, "lsf")
    assert script.startswith("#!/bin/bash -l\n")
    bash_n(script)
    assert directives(script) == [
        "#BSUB -J nb",
        "#BSUB -W 26:00",
        "#BSUB -q gpu",
        "#BSUB -P proj1",
        "#BSUB -n 4",
        "#BSUB -M 16GB",
        "#BSUB -gpu num=2",
        "#BSUB -x",
        "#BSUB -o /dev/null",
        "#BSUB -e /dev/null",
    ]
    assert all(DIRECTIVE.match(line) for line in directives(script))
    assert '\nHPCNB_JOB_ID="${LSB_JOBID:-}"\n# ---- hpcnb body' in script


def test_rendered_script_minimal_and_hostile_values() -> None:
    cfg = lsf_cluster()
    hostile = 'it\'s $(id) `id` "x" ; rm -rf ~ \\ $HOME *'
    script = render_script(cfg, build_request(cfg, time="00:30:00", notebook_dir=hostile), "lsf")
    bash_n(script)
    assert directives(script) == ["#BSUB -J hpcnb", "#BSUB -W 30", "#BSUB -o /dev/null",
                                  "#BSUB -e /dev/null"]


def test_gpu_model_from_a_profile_type() -> None:
    cfg = lsf_cluster()
    values = lsf.job_values(cfg, build_request(cfg, gpus=1))
    assert values == {"runlimit": "1:00", "gpu": "num=1"}
    r = replace(build_request(cfg, gpus=1), gpu_type="TeslaV100_SXM2_32GB")
    assert "#BSUB -gpu num=1:gmodel=TeslaV100_SXM2_32GB" in directives(render_script(cfg, r, "lsf"))


def test_a_directive_with_brackets_is_refused() -> None:
    # -R "span[hosts=1]" cannot pass the directive check (hpcnb/render.py): it must not be written.
    cfg = lsf_cluster()
    r = replace(build_request(cfg), directives=("-R span[hosts=1]",))
    with pytest.raises(UsageError, match="directive"):
        render_script(cfg, r, "lsf")


def test_config_accepts_scheduler_lsf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HPCNB_CLUSTER", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    config = tmp_path / "config.toml"
    config.write_text('[clusters.bluebox]\nscheduler = "lsf"\nlogin_host = "login.example.org"\n'
                      'partition = "normal"\naccount = "proj1"\n')
    monkeypatch.setenv("HPCNB_CONFIG", str(config))
    cfg = load_cluster("bluebox")
    assert (cfg.scheduler, cfg.partition_flag, cfg.account_flag, cfg.gpu_flag) == ("lsf", "-q", "-P", "num")
    script = render_script(cfg, build_request(cfg), "lsf")
    bash_n(script)
    assert directives(script)[:4] == ["#BSUB -J hpcnb", "#BSUB -W 1:00", "#BSUB -q normal",
                                      "#BSUB -P proj1"]
