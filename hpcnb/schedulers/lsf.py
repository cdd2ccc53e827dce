"""IBM Spectrum LSF 10.1 via bsub / bjobs / bkill / bqueues (pure).

Written from IBM's documentation only (no LSF daemon can run here; the samples in
tests/unit/captured/lsf_*_doc.txt are composed from the same pages). Pages are cited by their name
under https://www.ibm.com/docs/en/SSWRJV_10.1.0/ (the IBM Spectrum LSF 10.1.0 documentation,
https://www.ibm.com/docs/en/spectrum-lsf/10.1.0), e.g. lsf_command_ref/bjobs.o.1.html.
What could not be confirmed there is listed in the docstrings below as "not confirmed".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpcnb.schedulers.base import JobState, JobStatus, Scheduler, check_ids, size

if TYPE_CHECKING:
    from hpcnb.config import ClusterConfig
    from hpcnb.request import JobRequest

# bjobs STAT values: lsf_command_ref/bjobs.1.html ("JOB STATUS", the bjobs description) and the
# JOB_STAT_* codes of lsbatch.h in the LSF API reference (lsb_readjobinfo). Anything else (a newer
# LSF's word) maps to UNKNOWN.
STATE_MAP: dict[str, JobState] = {
    "PEND": JobState.PENDING,      # waiting in a queue to be scheduled and dispatched
    "PROV": JobState.PENDING,      # dispatched to a power-saved host that is being woken up
    "PSUSP": JobState.HELD,        # suspended by its owner or the admin while pending (bstop)
    "RUN": JobState.RUNNING,
    "USUSP": JobState.SUSPENDED,   # suspended by its owner or the admin while running
    "SSUSP": JobState.SUSPENDED,   # suspended by LSF (load, run window, preemption)
    "DONE": JobState.COMPLETED,    # exited with status 0
    "EXIT": JobState.FAILED,       # non-zero exit, or killed: refined by exit_reason below
    "UNKWN": JobState.UNKNOWN,     # mbatchd lost contact with the sbatchd of the job's host
    "WAIT": JobState.PENDING,      # member of a chunk job, waiting for its turn to run
    "ZOMBI": JobState.COMPLETING,  # killed while its host was unreachable; becomes EXIT when done
}

# How an EXIT job ended: the keyword before ':' in exit_reason, from the table "Termination
# reasons displayed by bacct, bhist, and bjobs" (lsf_admin/termination_reasons_lsf.html), e.g.
# "TERM_OWNER: job killed by owner". Other keywords (TERM_CPULIMIT, TERM_LOAD, ...) stay FAILED.
EXIT_REASONS: dict[str, JobState] = {
    "TERM_OWNER": JobState.CANCELLED,        # bkill by the owner
    "TERM_FORCE_OWNER": JobState.CANCELLED,  # bkill -r by the owner
    "TERM_ADMIN": JobState.CANCELLED,        # by root or the LSF administrator
    "TERM_FORCE_ADMIN": JobState.CANCELLED,
    "TERM_BUCKET_KILL": JobState.CANCELLED,  # bkill -b
    "TERM_RUNLIMIT": JobState.TIMEOUT,       # reached its run limit (bsub -W)
    "TERM_DEADLINE": JobState.TIMEOUT,       # its termination deadline (bsub -t) expired
    "TERM_MEMLIMIT": JobState.OUT_OF_MEMORY,
    "TERM_PREEMPT": JobState.PREEMPTED,
}

# bjobs -o fields (lsf_command_ref/bjobs.o.1.html: a field name alone means full width, no
# truncation), printed as JSON with -json (bjobs.json.1.html; "View customized information output in
# JSON format", release notes of LSF 10.1.0.2), so free text (job name, reasons) needs no delimiter.
# The layout, {"COMMAND":"bjobs","JOBS":N,"RECORDS":[{"JOBID":"..","STAT":"..",...}]} with the
# upper-case field names as keys and "" for no value, is NOT shown on IBM's pages: it is what
# captured output in public projects shows (DKFZ Roddy's LSF tests, ORNL buildtest's docs).
# jobindex is the array index, "0" for a job that is not an array element.
BJOBS_FIELDS = ("jobid", "jobindex", "stat", "queue", "exec_host", "time_left",
                "estimated_start_time", "pend_reason", "exit_code", "exit_reason", "job_name")
BJOBS_FORMAT = " ".join(BJOBS_FIELDS)

# What the b* commands print while mbatchd (or LIM) does not answer. Defaults of LSB_MBD_DOWN_MSG,
# LSB_MBD_CONNECT_FAIL_MSG, LSB_MBD_BUSY_MSG (lsf_admin/batch_cmd_customize_lsf.html,
# lsf_config_ref/lsf.conf.lsb_mbd_down_msg.5.html; a site may replace them), LSB_API_VERBOSE's
# retry message (lsf.conf.lsb_api_verbose.5.html) and the IBM support note "LSF Cluster not
# responding" ("batch system daemon not responding ...... still trying").
CONTROLLER_DOWN = (
    "lsf is down",
    "cannot connect to lsf",
    "lsf is processing your request",
    "batch system daemon not responding",
    "lsf daemon (lim) not responding",
)

# bjobs: "Job <123> is not found", exit 255 (lsf_config_ref/lsf.conf.lsb_bjobs_consistent_exit_code
# .5.html; 0 with LSB_BJOBS_CONSISTENT_EXIT_CODE=N while another asked-for job exists). bkill's
# "Job <N>: No matching job found" / "Job <N>: Job has already finished" are NOT confirmed from IBM's
# pages (they are what ExaWorks psij-python's LSF executor matches).
UNKNOWN_JOB = ("is not found", "no matching job found", "job has already finished")
_UNKNOWN_RE = re.compile(r"job <[^>]+>:? (?:is not found|no matching job found|job has already finished)")
EXIT_NOT_FOUND = 255

# bsub: "Job <2812> is submitted to default queue <normal>." (lsf_admin "Example messages" for
# interactive jobs); with -q, "... is submitted to queue <night>." (not confirmed on IBM's pages).
_SUBMITTED_RE = re.compile(r"^Job <(?P<id>[1-9]\d*)> is submitted to (?:default )?queue <[^<>]*>\.?$")
# A job id or one array element, "1234[2]" (bjobs.1.html: job_ID | "job_ID[index_list]").
# Never 0: `bkill 0` kills all of the user's jobs (bkill.1.html), `bjobs 0` lists them.
_JOB_ID_RE = re.compile(r"^[1-9]\d*(?:\[[1-9]\d*\])?\Z")
# time_left: "hours:minutes status" as bjobs -WL prints it (bjobs.__w__l.1.html), status L (a run
# limit, no estimate), E (an estimated run time, not exceeded) or X (the estimate is exceeded);
# hh:mm:ss with bjobs -hms or LSB_HMS_TIME_FORMAT=Y (lsf.conf.lsb_hms_time_format.5.html).
_TIME_LEFT_RE = re.compile(r"^(?P<h>\d+):(?P<m>\d{1,2})(?::(?P<s>\d{1,2}))?(?:\s*(?P<flag>[A-Z]))?\Z")
_NO_VALUE = {"", "-"}


def lsf_ids(job_ids: Sequence[str]) -> list[str]:
    """Job ids as argv words: check_ids, then only `1234` or `1234[5]` (never 0, never an option)."""
    return check_ids(job_ids, _JOB_ID_RE, "an LSF job id")


def lsf_runlimit(seconds: int) -> str:
    """bsub -W [hour:]minute (bsub.__w.1.html; minutes may exceed 59), rounded up to a minute:
    5400 s -> '1:30', 1800 s -> '30', 93600 s -> '26:00'."""
    minutes = math.ceil(int(seconds) / 60)
    hours, rest = divmod(minutes, 60)
    return f"{hours}:{rest:02d}" if hours else str(rest)


def lsf_mem(mb: int) -> str:
    """bsub -M with an explicit unit (bsub.__m.1.html: KB|K, MB|M, GB|G, ...), so the value does not
    depend on the site's LSF_UNIT_FOR_LIMITS (KB by default): '16GB', '500MB'."""
    return size(mb, ("GB", "MB"))


def gpu_request(gpus: int, gpu_flag: str, gpu_type: str | None) -> str:
    """bsub -gpu "num=N[:gmodel=MODEL]" (bsub.gpu.1.html); written without quotes, the value has no
    space. Needs LSB_GPU_NEW_SYNTAX=Y|extend in lsf.conf (lsf.conf.lsb_gpu_new_syntax.5.html)."""
    return f"{gpu_flag}={gpus}" + (f":gmodel={gpu_type}" if gpu_type else "")


def _value(text: Any) -> str | None:
    text = "" if text is None else str(text).strip()
    return None if text in _NO_VALUE else text


def first_host(exec_host: str | None) -> str | None:
    """exec_host -> its first host: '4*node01:4*node02' -> 'node01', 'node03:node03' -> 'node03'
    (slots of one host are repeated or counted as N*host); '' or '-' -> None."""
    text = _value(exec_host)
    if text is None:
        return None
    first = re.split(r"[:\s]+", text, maxsplit=1)[0]
    first = re.sub(r"^\d+\*", "", first)
    return first or None


def time_left(text: str | None) -> int | None:
    """time_left -> seconds until the run limit: '0:30 L' -> 1800, '00:30:00 L' -> 1800. Only an L
    (or bare) value is the run limit; E and X count down an *estimated* run time (bsub -We or an
    application's RUNTIME), which kills nothing, so they give None, as does '' or '-'."""
    value = _value(text)
    m = _TIME_LEFT_RE.match(value) if value else None
    if m is None or m["flag"] not in (None, "L"):
        return None
    return (int(m["h"]) * 60 + int(m["m"])) * 60 + int(m["s"] or 0)


def map_state(stat: str, exit_reason: str | None = None) -> JobState:
    """STAT -> JobState; an EXIT job's state comes from its exit_reason keyword when it has one."""
    state = STATE_MAP.get(stat.strip(), JobState.UNKNOWN)
    if state is JobState.FAILED and exit_reason:
        keyword = exit_reason.split(":", 1)[0].strip().upper()
        state = EXIT_REASONS.get(keyword, JobState.FAILED)
    return state


def bjobs_records(stdout: str) -> list[dict[str, str]]:
    """The RECORDS of `bjobs -o ... -json` with upper-case keys and string values; [] when stdout
    holds no such JSON object (nothing printed: never guess). Text before the object is skipped."""
    start = stdout.find("{")
    if start < 0:
        return []
    try:
        data, _ = json.JSONDecoder().raw_decode(stdout[start:])
    except ValueError:
        return []
    records = data.get("RECORDS") if isinstance(data, dict) else None
    if not isinstance(records, list):
        return []
    return [{str(k).upper(): "" if v is None else str(v) for k, v in r.items()}
            for r in records if isinstance(r, dict)]


def status_from_record(record: dict[str, str]) -> JobStatus | None:
    """One bjobs record -> JobStatus; None for a record that is not a job (no JOBID/STAT: an error
    entry such as a job that is not found)."""
    job_id, stat = _value(record.get("JOBID")), _value(record.get("STAT"))
    if job_id is None or stat is None or "ERROR" in record:
        return None
    index = _value(record.get("JOBINDEX"))
    if index not in (None, "0") and "[" not in job_id:
        job_id = f"{job_id}[{index}]"
    exit_reason = _value(record.get("EXIT_REASON"))
    state = map_state(stat, exit_reason)
    pend_reason = _value((record.get("PEND_REASON") or "").strip().rstrip(";"))
    if state in (JobState.PENDING, JobState.HELD):
        reason = pend_reason
    else:
        reason = exit_reason if stat == "EXIT" else None
    return JobStatus(
        job_id=job_id, state=state, raw_state=stat, name=_value(record.get("JOB_NAME")),
        partition=_value(record.get("QUEUE")), node=first_host(record.get("EXEC_HOST")),
        reason=reason,
        time_left_s=None if state.is_final else time_left(record.get("TIME_LEFT")),
        expected_start=(_value(record.get("ESTIMATED_START_TIME"))
                        if state is JobState.PENDING else None),
        exit_code=_value(record.get("EXIT_CODE")),
    )


class LSFScheduler(Scheduler):
    """IBM Spectrum LSF 10.1 (Fix Pack 2 or later: bjobs -json), from IBM's documentation."""
    step_in_refusal = "blaunch(1) works only from inside the job"

    name = "lsf"
    template = "lsf.sh.j2"
    controller_down = CONTROLLER_DOWN
    unknown_job = UNKNOWN_JOB
    directive_prefix = "#BSUB"
    partition_flags = ("-q",)
    account_flags = ("-P",)
    gpu_flags = ("num",)  # the count key of bsub -gpu "num=N:..."
    commands = ("bsub", "bjobs", "bkill")
    optional_commands = ("bqueues",)
    queue_word = "queue"

    def job_values(self, cfg: ClusterConfig, request: JobRequest) -> dict[str, str]:
        values = {"runlimit": lsf_runlimit(request.walltime_seconds)}
        if request.mem_mb:
            values["mem"] = lsf_mem(request.mem_mb)
        if request.gpus:
            values["gpu"] = gpu_request(request.gpus, self.flags(cfg)["gpu"], request.gpu_type)
        return values

    def queues_argv(self, cfg: ClusterConfig) -> list[str] | None:
        # bqueues -w: the default table, names not truncated (lsf_command_ref/bqueues.1.html).
        return ["bqueues", "-w"]

    def parse_queues(self, stdout: str) -> tuple[list[str], str | None]:
        # A QUEUE_NAME PRIO STATUS ... header, then one queue per line, its name first. bqueues does
        # not mark the default queue (DEFAULT_QUEUE in lsb.params; `bparams` shows it).
        names = [ln.split()[0] for ln in stdout.splitlines()
                 if ln.strip() and ln.split()[0] != "QUEUE_NAME"]
        return list(dict.fromkeys(names)), None

    def submit_argv(self) -> list[str]:
        # lsf_command_ref/bsub.zz1argument.command.1.html: "If the job is not given on the command
        # line, bsub reads the job commands from standard input", and takes the lines that begin with
        # #BSUB as options. (`bsub script` would need LSB_BSUB_PARSE_SCRIPT=Y: bsub.zz1argument.
        # job_script.1.html; otherwise the file runs as a command and its #BSUB lines are ignored.)
        return ["bsub"]

    def parse_job_id(self, stdout: str) -> str:
        # Other lines (an esub's messages) may come first: the last "Job <N> is submitted" line wins.
        for line in reversed(stdout.strip().splitlines()):
            m = _SUBMITTED_RE.match(line.strip())
            if m:
                return m["id"]
        raise ValueError(f"bsub printed no job id: {stdout.strip()[:200]!r}")

    def status_argv(self, job_ids: Sequence[str], user: str | None) -> list[str]:
        # -a: also the jobs that finished within CLEAN_PERIOD (lsb.params, default 1 hour;
        # bjobs.a.1.html); without it bjobs says "No unfinished job found" for a finished job even
        # when it is named. Without ids: the user's own jobs (or -u user's).
        argv = ["bjobs", "-a", "-o", BJOBS_FORMAT, "-json"]
        ids = lsf_ids(job_ids)
        if ids:
            return [*argv, *ids]
        return [*argv, "-u", user] if user else argv

    def parse_status(self, stdout: str) -> dict[str, JobStatus]:
        jobs: dict[str, JobStatus] = {}
        for record in bjobs_records(stdout):
            status = status_from_record(record)
            if status is not None:
                jobs[status.job_id] = status
        return jobs

    # history_argv stays None: status_argv's `bjobs -a` already returns the jobs mbatchd still
    # remembers (CLEAN_PERIOD), and bhist/bacct have no -o/-json, only prose (-l, wrapped lines)
    # that could not be checked against IBM samples here. A job purged from mbatchd is "absent".

    def cancel_argv(self, job_id: str) -> list[str]:
        # bkill sends SIGINT, SIGTERM, then SIGKILL (lsf_command_ref/bkill.1.html).
        return ["bkill", lsf_ids([job_id])[0]]

    def is_unknown_job_error(self, stderr: str, exit_status: int | None = None) -> bool:
        if _UNKNOWN_RE.search(stderr.lower()):
            return True
        # With -json the "not found" text may be in the JSON, not on stderr: 255 and nothing else.
        return exit_status == EXIT_NOT_FOUND and not stderr.strip()
