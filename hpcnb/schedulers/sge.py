"""Grid Engine (Son of Grid Engine 8.1.9, Debian's gridengine packages) via qsub, qstat -xml, qacct,
qdel (pure).

Formats are those the real daemons print: the testbed's qmaster and execds
(tests/testbed/capture_sge.py -> tests/unit/captured/sge_*_testbed.txt; tests/cluster/test_gridengine.py
runs hpcnb end to end on them) and a single-host run (../shared/gridengine/captures/ ->
sge_*_recipe.txt). Man pages cited: qsub(1), qstat(1), qacct(1), accounting(5), sge_types(1),
complex(5), sge_pe(5) of SGE 8.1.9.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from hpcnb.schedulers.base import JobState, JobStatus, Scheduler, check_ids, hms, parse_duration, size

if TYPE_CHECKING:
    from hpcnb.config import ClusterConfig
    from hpcnb.request import JobRequest

# The parallel environment that gives a job N slots on one host (sge_pe(5): allocation_rule
# $pe_slots). Its name is site configuration; `smp` is the common convention (and the testbed's).
# A site with another name sets it with an extra directive (`-pe NAME N`) and no --cpus.
PE_NAME = "smp"

# qstat(1), "state": letters combined in one word, e.g. qw, hqw, hRwq, r, t, Rr, Rt, s, ts, S, tS,
# T, tT, Eqw, dr, dt, dRr. Checked in this order: the first letter found decides.
#   E  error: the job could not start (exit 100 of a job, a bad shell or path) and stays in the
#      queue until `qmod -cj` or qdel: not final, not pending either -> HELD (the reason says why)
#   d  being deleted (qdel) -> COMPLETING
#   h  hold (qhold, -hold_jid) -> HELD
#   s, S, T  suspended (by the user/admin, by its queue, by a threshold) -> SUSPENDED
#   r  running (R: restarted, prefixed) -> RUNNING
#   t  being transferred to its execd: it has a host, the script has not started -> PENDING
#   w, q  waiting in the queue -> PENDING
#   z  zombie (finished, qstat -s z) -> COMPLETED
STATE_ORDER: tuple[tuple[str, JobState], ...] = (
    ("E", JobState.HELD),
    ("d", JobState.COMPLETING),
    ("h", JobState.HELD),
    ("s", JobState.SUSPENDED),
    ("S", JobState.SUSPENDED),
    ("T", JobState.SUSPENDED),
    ("r", JobState.RUNNING),
    ("t", JobState.PENDING),
    ("w", JobState.PENDING),
    ("q", JobState.PENDING),
    ("z", JobState.COMPLETED),
)

# qacct(1) / accounting(5) "failed": the reason a job ended besides its own exit status.
FAILED_LIMIT = "37"       # "qmaster enforced h_rt, h_cpu, or h_vmem limit" (captures/qacct-hrt.txt)
FAILED_SIGNAL = "100"     # "assumedly after job": died through a signal; qdel of a running job
#                           (SIGKILL, exit_status 137: captures/qacct-qdel-running.txt)
EXIT_KILLED = "137"       # 128 + SIGKILL

# What the q* commands print when sge_qmaster does not answer. Captured on the testbed with the qmaster
# stopped (sge_*_controller_down_testbed.txt): "error: commlib error: got select error (Connection
# refused)" and 'unable to send message to qmaster using port 6444 on host "login1": got send error'.
# The others are from SGE 8.1.9's sources (a host that does not answer, a cell without act_qmaster).
CONTROLLER_DOWN = (
    "unable to contact qmaster",
    "unable to send message to qmaster",
    "commlib error",
    "can't get act_qmaster",   # no $SGE_ROOT/$SGE_CELL/common/act_qmaster (cell gone)
    "cannot reach qmaster",
)
UNKNOWN_JOB = (
    "does not exist",          # qdel: 'denied: job "12" does not exist'
    "jobs do not exist",       # qstat -j: "Following jobs do not exist" (captures/qstat-j-after-end.txt)
    "not found",               # qacct: "error: job id 11 not found" (captures/qacct-qdel-queued.txt)
)

# qsub reads the script on its standard input (the #$ lines are options too: checked on the testbed).
# A refusal is two lines on stderr, "Unable to run job: error: no suitable queues", "Exiting.";
# hpcnb quotes an error's last line, so the "Exiting." goes and the reason is what the user reads.
# qsub's exit status is kept; its stdout (-terse: the id) goes to ours as it is.
_SUBMIT_SH = ('exec 3>&1; e=$(qsub -terse 2>&1 >&3 3>&-); s=$?; '
              '[ -n "$e" ] && printf "%s\\n" "$e" | grep -vx "Exiting\\." >&2; exit "$s"')

# qdel prints its verdicts on stdout, a refusal too: 'denied: job "9" does not exist', exit 1
# (sge_qdel_unknown_testbed.txt); hpcnb reads a failed command's stderr, so it goes there.
_CANCEL_SH = 'exec qdel "$1" >&2'

# qsub -terse prints only the id ("9", captures/qsub-test.txt); an array job "9.1-10:1".
_JOB_ID_RE = re.compile(r"^[1-9]\d*(?:\.\d+(?:-\d+(?::\d+)?)?)?\Z")
_DIGITS = re.compile(r"^[1-9]\d*\Z")
# The status command prints the login host's clock first (local time, as qstat's times are).
_NOW_RE = re.compile(r"^\s*(?P<now>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\s*$", re.MULTILINE)

# One query: the host's time (to turn JAT_start_time into time left), then qstat -r -xml, whose
# job_list entries carry hard_request elements (h_rt) beside state and queue_name (all.q@HOST).
_STATUS_SH = 'date +%Y-%m-%dT%H:%M:%S && exec qstat -r -xml "$@"'
# qacct -j takes one job at a time (qacct(1)). A job deleted while queued has no record ("error:
# job id N not found", exit 1: fact 8), and before the first job ends there is no accounting file:
# both are "no record", so the loop's status is 0 and the texts stay on stderr.
_HISTORY_SH = 'for j do qacct -j "$j"; done; exit 0'


def sge_ids(job_ids: Sequence[str]) -> list[str]:
    """Job ids as argv words: check_ids, then digits only (a task "9.2" is asked for as "9")."""
    return check_ids(job_ids, _DIGITS, "a Grid Engine job id")


def sge_mem_per_slot(mem_mb: int, slots: int | None) -> str:
    """h_vmem is per slot (queue_conf(5), complex(5): a job's limit is h_vmem times its slots), so
    the request's total is divided by the slots and rounded up to a whole MB: 16 GB on 4 slots ->
    '4G', 1000 MB on 3 -> '334M'. Units per sge_types(1): K, M, G are powers of 1024."""
    per_slot = math.ceil(mem_mb / max(slots or 1, 1))
    return size(per_slot, ("G", "M"))


def map_state(raw: str) -> JobState:
    for letter, state in STATE_ORDER:
        if letter in raw:
            return state
    return JobState.UNKNOWN


def node_of(queue_name: str | None) -> str | None:
    """'all.q@node01' -> 'node01'; '' (a pending job) -> None."""
    if not queue_name or "@" not in queue_name:
        return None
    return queue_name.split("@", 1)[1].strip() or None


def _text(element: ET.Element, tag: str) -> str | None:
    child = element.find(tag)
    text = (child.text or "").strip() if child is not None else ""
    return text or None


def _time_left(h_rt: str | None, start: str | None, now: str | None, state: JobState) -> int | None:
    limit = parse_duration(h_rt) if h_rt else None
    if limit is None or state.is_final:
        return None
    if state in (JobState.PENDING, JobState.HELD):
        return limit
    if not (start and now):
        return None
    try:
        used = (datetime.fromisoformat(now) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None
    return max(limit - int(used), 0)


def parse_qstat_xml(stdout: str) -> dict[str, JobStatus]:
    """`qstat [-r] -xml`: running jobs under <queue_info>, pending ones under <job_info>, each a
    <job_list> (captures/qstat-with-queued.xml). Text before the XML (the clock line) is skipped."""
    m = _NOW_RE.search(stdout.split("<", 1)[0]) if "<" in stdout else None
    now = m["now"] if m else None
    start = stdout.find("<?xml")
    if start < 0:
        start = stdout.find("<job_info")
    if start < 0:
        return {}
    try:
        root = ET.fromstring(stdout[start:].strip())
    except ET.ParseError:
        return {}
    jobs: dict[str, JobStatus] = {}
    for job in root.iter("job_list"):
        job_id = _text(job, "JB_job_number")
        raw = _text(job, "state") or ""
        if not job_id:
            continue
        tasks = _text(job, "tasks")   # an array job's task ids: not followed as one job
        if tasks:
            continue
        state = map_state(raw)
        h_rt = next((r.text for r in job.findall("hard_request") if r.get("name") == "h_rt"), None)
        queue = _text(job, "hard_req_queue")
        queue_name = _text(job, "queue_name")
        reason = "error state: `qstat -j ID` says why; `qdel` it" if "E" in raw else None
        jobs[job_id] = JobStatus(
            job_id=job_id, state=state, raw_state=raw, name=_text(job, "JB_name"),
            partition=queue or (queue_name.split("@", 1)[0] if queue_name else None),
            node=node_of(queue_name), reason=reason,
            time_left_s=_time_left(h_rt, _text(job, "JAT_start_time"), now, state),
        )
    return jobs


def parse_qacct(stdout: str) -> dict[str, dict[str, str]]:
    """`qacct -j ID` records, each after a line of '=': 'key   value' lines (qacct(1)). The last
    record of an id wins (ids come round again after a reinstall: fact 11)."""
    records: dict[str, dict[str, str]] = {}
    for block in re.split(r"^=+\s*$", stdout, flags=re.MULTILINE):
        attrs: dict[str, str] = {}
        for line in block.splitlines():
            parts = line.strip().split(None, 1)
            if parts:
                attrs[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
        job_id = attrs.get("jobnumber")
        if job_id:
            records[job_id] = attrs
    return records


def _limit(category: str, name: str) -> int | None:
    """'-l h_rt=300 -pe smp 1' -> the h_rt value (qacct's category: the job's requests)."""
    m = re.search(rf"(?:^|[\s,]){name}=([\w:]+)", category)
    return parse_duration(m[1]) if m else None


def ended_state(attrs: dict[str, str]) -> tuple[JobState, str | None]:
    """(state, reason) of a finished job from qacct's failed and exit_status."""
    failed_field = attrs.get("failed", "0")
    failed = failed_field.split(":", 1)[0].strip() or "0"
    reason = failed_field.split(":", 1)[1].strip() if ":" in failed_field else None
    code = (attrs.get("exit_status", "").split() or [""])[0]
    if failed == FAILED_LIMIT:
        limit = _limit(attrs.get("category", ""), "h_rt")
        wall = parse_duration(attrs.get("ru_wallclock", "").rstrip("s"))
        # failed 37 covers h_rt, h_cpu and h_vmem: the wall clock tells h_rt apart.
        if limit is not None and wall is not None and wall >= limit:
            return JobState.TIMEOUT, reason
        return JobState.FAILED, reason
    if failed == FAILED_SIGNAL and code == EXIT_KILLED:
        # qdel of a running job (captures/qacct-qdel-running.txt). A SIGKILL from elsewhere (the
        # kernel's OOM killer) reads the same: qacct records no "deleted by".
        return JobState.CANCELLED, "deleted (qdel) or killed"
    if failed != "0":
        return JobState.FAILED, reason
    if code not in ("", "0"):
        return JobState.FAILED, None
    return JobState.COMPLETED, None


def status_from_qacct(job_id: str, attrs: dict[str, str]) -> JobStatus:
    state, reason = ended_state(attrs)
    code = (attrs.get("exit_status", "").split() or [None])[0]
    return JobStatus(job_id=job_id, state=state, raw_state=f"failed={attrs.get('failed', '?')}",
                     name=attrs.get("jobname") or None, partition=attrs.get("qname") or None,
                     node=attrs.get("hostname") or None, reason=reason, exit_code=code)


class SGEScheduler(Scheduler):
    """Son of Grid Engine 8.1 (and the Sun/Oracle 6.2 line it continues)."""
    step_in_refusal = "qrsh -inherit (qrsh(1)) works only from inside the job"

    name = "sge"
    template = "sge.sh.j2"
    controller_down = CONTROLLER_DOWN
    unknown_job = UNKNOWN_JOB
    directive_prefix = "#$"
    partition_flags = ("-q",)
    account_flags = ("-P", "-A")  # -P: a project (sharetree); -A: the free-text account string
    gpu_flags = ("gpu",)          # the consumable complex: -l gpu=N (complex(5))
    commands = ("qsub", "qstat", "qdel")
    optional_commands = ("qacct", "qconf")
    queue_word = "queue"

    def job_values(self, cfg: ClusterConfig, request: JobRequest) -> dict[str, str]:
        values = {"h_rt": hms(request.walltime_seconds), "pe": PE_NAME}
        if request.mem_mb:
            values["h_vmem"] = sge_mem_per_slot(request.mem_mb, request.cpus)
        return values

    def queues_argv(self, cfg: ClusterConfig) -> list[str] | None:
        return ["qconf", "-sql"]   # one cluster queue name per line (qconf(1))

    def parse_queues(self, stdout: str) -> tuple[list[str], str | None]:
        names = [ln.strip() for ln in stdout.splitlines() if ln.strip() and " " not in ln.strip()]
        return list(dict.fromkeys(names)), None

    def submit_argv(self) -> list[str]:
        # qsub(1): "If no command argument is given, qsub reads the script from its standard
        # input"; the #$ lines of a script read from stdin are options as well (checked on the
        # testbed's qmaster). -terse: print only the job id (captures/qsub-test.txt).
        return ["sh", "-c", _SUBMIT_SH]

    def parse_job_id(self, stdout: str) -> str:
        lines = [ln.strip() for ln in stdout.strip().splitlines() if ln.strip()]
        if not lines or not _JOB_ID_RE.match(lines[-1]):
            raise ValueError(f"qsub printed no job id: {stdout.strip()[:200]!r}")
        return lines[-1].split(".", 1)[0]

    def status_argv(self, job_ids: Sequence[str], user: str | None) -> list[str]:
        # qstat takes no job ids (qstat -j is the long per-job form, without the host: fact 6):
        # the user's jobs, filtered by the caller. Without -u, qstat shows the caller's own jobs.
        sge_ids(job_ids)
        user_args = ["-u", user] if user else []
        return ["sh", "-c", _STATUS_SH, "sh", *user_args]

    def parse_status(self, stdout: str) -> dict[str, JobStatus]:
        return parse_qstat_xml(stdout)

    def history_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        ids = sge_ids(job_ids)
        return ["sh", "-c", _HISTORY_SH, "sh", *ids] if ids else None

    def parse_history(self, stdout: str) -> dict[str, JobStatus]:
        return {j: status_from_qacct(j, a) for j, a in parse_qacct(stdout).items()}

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["sh", "-c", _CANCEL_SH, "sh", sge_ids([job_id])[0]]
