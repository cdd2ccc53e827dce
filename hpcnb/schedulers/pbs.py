"""PBS Pro / OpenPBS / Torque via qsub, qstat -f, qdel (pure). Also the commands of Slurm's
slurm-wlm-torque wrappers (perl scripts in /usr/bin), which the testbed uses.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hpcnb.schedulers.base import JobState, JobStatus, Scheduler, check_ids, hms, parse_duration, size
from hpcnb.schedulers.slurm import CONTROLLER_DOWN as SLURM_CONTROLLER_DOWN

if TYPE_CHECKING:
    from hpcnb.config import ClusterConfig
    from hpcnb.request import JobRequest

# job_state letters: qstat(1B) and the PBS Professional Reference Guide, "Job States";
# C is Torque's (also printed by Slurm's torque wrapper for every ended job).
STATE_MAP: dict[str, JobState] = {
    "B": JobState.RUNNING,      # array job: at least one subjob has started
    "E": JobState.COMPLETING,   # exiting after having run
    "F": JobState.COMPLETED,    # finished (history, qstat -x); refined by exit status below
    "H": JobState.HELD,
    "M": JobState.UNKNOWN,      # moved to another server: not ours to follow
    "Q": JobState.PENDING,
    "R": JobState.RUNNING,
    "S": JobState.SUSPENDED,
    "T": JobState.PENDING,      # being moved to a new location
    "U": JobState.SUSPENDED,    # suspended because the workstation became busy
    "W": JobState.PENDING,      # waiting for its submitter-assigned start time (qsub -a)
    "X": JobState.COMPLETED,    # subjob finished (expired)
    "C": JobState.COMPLETED,    # Torque: completed after having run
}
_ENDED = frozenset("FXC")

# PBS Pro job.h: history substates and JOB_EXEC_* exit codes of jobs the server/MoM ended.
SUBSTATE_TERMINATED, SUBSTATE_FAILED = "91", "93"   # 91: deleted by qdel
EXIT_KILL_MEM, EXIT_KILL_WALLTIME = "-27", "-29"
EXIT_SIGTERM = "271"   # 256 + SIGTERM: what a running job deleted with qdel reports

CONTROLLER_DOWN = (
    "cannot connect to server",           # PBS Pro / Torque: "qstat: cannot connect to server X"
    "cannot connect to default server",   # Torque
    "communication failure",
    "pbs_iff: cannot connect",
    "problem loading jobs",   # slurm-wlm-torque qstat: dies with this when load_jobs fails
    *SLURM_CONTROLLER_DOWN,   # the wrappers pass Slurm's own errors through
)
UNKNOWN_JOB = (
    "unknown job id",         # PBS Pro "qstat: Unknown Job Id 12.srv"; Torque "... Id Error"
    "job has finished",       # PBS Pro >= 13 without -x: "Job has finished, use -x or -H ..."
    "invalid job id",         # Slurm's text through the wrappers
)
# PBS exits 153 (PBSE_UNKJOBID 15001 & 0xff) for unknown ids; Slurm's qstat wrapper does too,
# silently: `$rc = 153; # if we don't find what we are looking for` (/usr/bin/qstat).
EXIT_UNKNOWN_JOB = 153
# ... and 35 (PBSE_HISTJOBID 15139 & 0xff) for a job that has finished: ask `qstat -x`. NCAR's
# cached qstat (github NCAR/qstat-cache, src/qscache/qscache.py) does the same, printing "Job has
# finished" on stdout, not stderr, and says "Unknown Job Id" (153) for a job newer than its cache
# (refreshed every ~10 s, history every minute): the history query therefore goes to the server
# itself (QSCACHE_BYPASS, any value), so a just-submitted job is never taken for a gone one.
EXIT_FINISHED_JOB = 35
CACHE_BYPASS = "QSCACHE_BYPASS=1"

_JOB_ID_RE = re.compile(r"^\d+(?:\[\d*\])?(?:\.[A-Za-z0-9_.-]+)?$")
_ATTR_RE = re.compile(r"^(?P<indent>\s+)(?P<key>[A-Za-z_][\w.]*) = ?(?P<value>.*)$")

# One argv that works with all three qsubs. PBS Pro's qsub refuses a script that is not a regular
# file ("qsub: script not a file"), so /dev/stdin (a pipe over SSH) fails there; Slurm's wrapper
# needs a script argument and passes "-" to sbatch, which then says "Unable to open file -".
# So: copy stdin to a private temp file, submit that, remove it (all three copy the script at
# submit time). umask 077 keeps the script (it holds the user's settings) private.
_SUBMIT_SH = (
    'umask 077; f=$(mktemp "${TMPDIR:-/tmp}/hpcnb-job.XXXXXX") || exit 1; '
    'trap \'rm -f "$f"\' EXIT; cat >"$f" || exit 1; qsub "$f"'
)


def parse_qstat_full(text: str) -> dict[str, dict[str, str]]:
    """`qstat -f` blocks -> {job id: {attribute: value}}.

    PBS Pro and Torque indent attributes with 4 spaces and continue long values on lines that
    start with a tab; Slurm's wrapper indents attributes with a tab and never wraps. Torque's
    `qstat -f -x` prints XML instead, which is handled too.
    """
    if text.lstrip().startswith("<"):
        return _parse_qstat_xml(text)
    jobs: dict[str, dict[str, str]] = {}
    blocks = re.split(r"^(?=Job Id:)", text, flags=re.MULTILINE)
    for block in blocks:
        lines = block.splitlines()
        if not lines or not lines[0].startswith("Job Id:"):
            continue
        job_id = lines[0].split(":", 1)[1].strip()
        spaced = any(ln.startswith("    ") for ln in lines[1:])
        attrs: dict[str, str] = {}
        last: str | None = None
        for line in lines[1:]:
            if not line.strip():
                continue
            m = _ATTR_RE.match(line)
            continuation = line.startswith("\t") and spaced
            if m and not continuation:
                last = m["key"]
                attrs[last] = m["value"]
            elif last is not None:
                # qstat wraps a value at 78 columns, after a comma or inside a word (a space too:
                # "... and terminated" / "\t by alice@login1"), going on after "\n\t"
                # (OpenPBS src/cmds/qstat.c, prt_attr): the rest follows the one tab as it is.
                attrs[last] += line[1:] if continuation else line.strip()
        jobs[job_id] = {key: value.strip() for key, value in attrs.items()}
    return jobs


def _parse_qstat_xml(text: str) -> dict[str, dict[str, str]]:
    """Torque `qstat -f -x`: <Data><Job><Job_Id>..</Job_Id><Resource_List><walltime>.."""
    jobs: dict[str, dict[str, str]] = {}
    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError:
        return jobs
    for job in root.iter("Job"):
        attrs: dict[str, str] = {}
        for child in job:
            if len(child):
                for sub in child:
                    attrs[f"{child.tag}.{sub.tag}"] = (sub.text or "").strip()
            else:
                attrs[child.tag] = (child.text or "").strip()
        job_id = attrs.pop("Job_Id", "")
        if job_id:
            jobs[job_id] = attrs
    return jobs


def pbs_mem(mb: int) -> str:
    """A PBS size: 4gb or 500mb (pbs_resources(7B): an integer and kb, mb, gb or tb)."""
    return size(mb, ("gb", "mb"))


def resources(cfg: ClusterConfig, request: JobRequest, gpu_flag: str) -> str:
    """The `-l` chunk: select=1:ncpus=N:mem=Xgb (PBS Pro), or ncpus=N,mem=Xgb where the site wants
    plain resources (cfg.pbs_resources = "flat"); "" when the request names none."""
    if cfg.pbs_flavour == "torque":
        return torque_resources(request)
    parts = []
    if request.cpus:
        parts.append(f"ncpus={request.cpus}")
    if request.mem_mb:
        parts.append(f"mem={pbs_mem(request.mem_mb)}")
    if request.gpus:
        parts.append(f"{gpu_flag}={request.gpus}")
    if not parts:
        return ""
    if cfg.pbs_resources == "flat":
        return ",".join(parts)
    return ":".join(["select=1", *parts])


def torque_resources(request: JobRequest) -> str:
    """Torque's resource syntax (qsub(1), pbs_resources(7) in Torque): -l nodes=1:ppn=N[:gpus=G]
    for cores and GPUs on one node, mem=X beside it. PBS Pro's select= is not Torque's."""
    node = ""
    if request.cpus or request.gpus:
        node = f"nodes=1:ppn={request.cpus or 1}" + (f":gpus={request.gpus}" if request.gpus else "")
    mem = f"mem={pbs_mem(request.mem_mb)}" if request.mem_mb else ""
    return ",".join(part for part in (node, mem) if part)


def first_exec_host(exec_host: str | None) -> str | None:
    """'node01/0*2+node02/0' (PBS Pro), 'node01/0-1+node02/0' (Torque) -> 'node01'."""
    if not exec_host or exec_host.strip() in {"", "--"}:
        return None
    return exec_host.strip().split("+", 1)[0].split("/", 1)[0] or None


def _time_left(attrs: dict[str, str], state: JobState) -> int | None:
    remaining = attrs.get("Walltime.Remaining")   # Torque prints it (seconds) for running jobs
    if remaining is not None:
        return parse_duration(remaining)
    limit = parse_duration(attrs.get("Resource_List.walltime", ""))
    if limit is None or state.is_final:
        return None
    used = parse_duration(attrs.get("resources_used.walltime", ""))
    if used is None and state is JobState.RUNNING and "stime" in attrs:
        # PBS Pro / OpenPBS: started (stime) but the MoM has not reported its first usage yet
        # (it does so periodically, OpenPBS src/resmom/mom_main.c): it has only just begun.
        used = 0
    if used is None:
        # Slurm's wrapper prints no resources_used: we cannot tell for a started job.
        return limit if state in {JobState.PENDING, JobState.HELD} else None
    return max(limit - used, 0)


def _ended_state(attrs: dict[str, str]) -> JobState:
    """Refine F/X/C by how the job ended (PBS Pro substate / Exit_status; Torque exit_status)."""
    code = attrs.get("Exit_status", attrs.get("exit_status"))
    substate = attrs.get("substate")
    limit = parse_duration(attrs.get("Resource_List.walltime", ""))
    used = parse_duration(attrs.get("resources_used.walltime", ""))
    if substate == SUBSTATE_TERMINATED:
        return JobState.CANCELLED
    # Torque kills an over-time job with SIGTERM (exit 271, like qdel): tell them apart by time.
    if code == EXIT_KILL_WALLTIME or (code not in (None, "0") and limit and used and used >= limit):
        return JobState.TIMEOUT
    if code == EXIT_KILL_MEM:
        return JobState.OUT_OF_MEMORY
    if code == EXIT_SIGTERM:
        return JobState.CANCELLED
    if substate == SUBSTATE_FAILED or code not in (None, "0"):
        return JobState.FAILED
    # Exit 0, or no exit status at all (Slurm's wrapper prints C for every ended job).
    return JobState.COMPLETED


def status_from_attrs(job_id: str, attrs: dict[str, str]) -> JobStatus:
    raw = attrs.get("job_state", "").strip()
    state = STATE_MAP.get(raw, JobState.UNKNOWN)
    if raw in _ENDED:
        state = _ended_state(attrs)
    return JobStatus(
        job_id=job_id, state=state, raw_state=raw, name=attrs.get("Job_Name") or None,
        partition=attrs.get("queue") or None, node=first_exec_host(attrs.get("exec_host")),
        reason=attrs.get("comment") or None, time_left_s=_time_left(attrs, state),
        expected_start=attrs.get("estimated.start_time") if state is JobState.PENDING else None,
        exit_code=attrs.get("Exit_status", attrs.get("exit_status")),
    )


class PBSScheduler(Scheduler):
    """PBS Pro, OpenPBS, Torque, and Slurm's torque wrappers."""
    step_in_refusal = "pbs_attach(8B) works only on the job's node; qsub -I starts another job"

    name = "pbs"
    template = "pbs.sh.j2"
    controller_down = CONTROLLER_DOWN
    unknown_job = UNKNOWN_JOB
    directive_prefix = "#PBS"
    partition_flags = ("-q",)
    account_flags = ("-A", "-P")  # -P: NCI Gadi's project
    gpu_flags = ("ngpus", "naccelerators")
    commands = ("qsub", "qstat", "qdel")
    queue_word = "queue"

    def job_values(self, cfg: ClusterConfig, request: JobRequest) -> dict[str, str]:
        return {"walltime": hms(request.walltime_seconds),
                "resources": resources(cfg, request, self.flags(cfg)["gpu"])}

    def queues_argv(self, cfg: ClusterConfig) -> list[str] | None:
        return ["qstat", "-Q"]

    def parse_queues(self, stdout: str) -> tuple[list[str], str | None]:
        # `qstat -Q`: a header (Queue ... / ---- ...), then one queue per line, its name first.
        names = [ln.split()[0] for ln in stdout.splitlines()
                 if ln.strip() and not ln.startswith(("Queue", "---", "Server"))]
        return list(dict.fromkeys(names)), None

    def submit_argv(self) -> list[str]:
        return ["sh", "-c", _SUBMIT_SH]

    def parse_job_id(self, stdout: str) -> str:
        # qsub prints the id as the last line: "1234.server" (PBS), "1234" (Slurm's wrapper).
        # The wrapper prints an error text to stdout on failure, which does not match.
        lines = [ln.strip() for ln in stdout.strip().splitlines() if ln.strip()]
        if not lines or not _JOB_ID_RE.match(lines[-1]):
            raise ValueError(f"qsub printed no job id: {stdout.strip()[:200]!r}")
        return lines[-1]

    def status_argv(self, job_ids: Sequence[str], user: str | None) -> list[str]:
        # Not `-u user`: Slurm's wrapper switches to the one-line format when -u is given.
        # Without ids qstat -f lists every job the server shows us; callers filter.
        return ["qstat", "-f", *check_ids(job_ids)]

    def parse_status(self, stdout: str) -> dict[str, JobStatus]:
        return {j: status_from_attrs(j, a) for j, a in parse_qstat_full(stdout).items()}

    def history_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        ids = check_ids(job_ids)
        # PBS Pro: -x includes finished (F) jobs, -f the full record. On Torque -x means XML
        # (handled by the parser); Slurm's wrapper has no -x ("Unknown option: x", exit 2):
        # see history_unsupported.
        return ["env", CACHE_BYPASS, "qstat", "-x", "-f", *ids] if ids else None

    def parse_history(self, stdout: str) -> dict[str, JobStatus]:
        return self.parse_status(stdout)

    def history_unsupported(self, stderr: str, exit_status: int) -> bool:
        text = stderr.lower()
        return exit_status != 0 and ("unknown option: x" in text or "invalid option" in text)

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["qdel", check_ids([job_id])[0]]

    def is_unknown_job_error(self, stderr: str, exit_status: int | None = None) -> bool:
        if super().is_unknown_job_error(stderr, exit_status):
            return True
        if exit_status == EXIT_FINISHED_JOB:
            return True
        return exit_status == EXIT_UNKNOWN_JOB and not stderr.strip()
