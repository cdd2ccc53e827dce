"""Test doubles for hpcnb.watcher and the Python API: no SSH, no scheduler, no real waiting.

  * FakeClock: a hpcnb.watcher.Clock whose time moves only when someone sleeps or waits on it;
    `at(t, action)` runs an action at a virtual time (e.g. set a `stop` event).
  * FakeRemote: the Remote protocol (hpcnb.remote), replaying a script over that virtual time:
    scheduler answers per job id (squeue and sacct lines, `qstat -f` blocks, preferably taken from
    tests/unit/captured/), failures over a time window, fixed answers (sbatch, scancel), and the
    job's files in .hpcnb/sessions/<machine>/<id>/ appearing (or going) at given times. Every command and
    every file read is recorded with the virtual time it happened at.

    clock = FakeClock()
    fake = FakeRemote(clock)
    fake.job("squeue", "4", captured_record("slurm_squeue_22.05.txt", "4"))          # PENDING
    fake.job("squeue", "4", captured_record("slurm_squeue_22.05.txt", "3", as_id="4"), at=12)
    fake.handshake("4", at=20)
    ...
    assert fake.times("squeue") == [0.0, 6.0, 16.0]
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcnb import handshake as hs
from hpcnb.remote import CommandResult
from hpcnb.schedulers.slurm import SACCT_FIELDS, SQUEUE_FIELDS
from hpcnb.watcher import Clock

CAPTURED = Path(__file__).parent / "captured"

# A moment in 2026 (the testbed captures' dates): the wall clock at virtual time 0.
EPOCH = 1_795_000_000.0


# ---- captured scheduler output ------------------------------------------------------------------


def captured(name: str) -> str:
    """A captured sample without its '## ' provenance header (which ends at '## ---')."""
    return (CAPTURED / name).read_text().split("## ---\n", 1)[1]


_JOB_ID_LINE = re.compile(r"^Job Id:\s*(\S+)", re.MULTILINE)


def captured_record(name: str, job_id: str, *, as_id: str | None = None) -> str:
    """One job from a captured sample: its line (squeue, sacct) or its block (`qstat -f`),
    optionally relabelled as job `as_id` (to replay a state of one captured job for another)."""
    text = captured(name)
    if _JOB_ID_LINE.search(text):
        for block in re.split(r"^(?=Job Id:)", text, flags=re.MULTILINE):
            m = _JOB_ID_LINE.match(block)
            if m and m[1] == job_id:
                block = block.rstrip("\n") + "\n"
                if as_id is not None:
                    block = block[:m.start(1)] + as_id + block[m.end(1):]
                return block
    else:
        for line in text.splitlines():
            first, sep, rest = line.partition("|")
            if sep and first == job_id:
                return line if as_id is None else f"{as_id}|{rest}"
    raise KeyError(f"no job {job_id!r} in captured/{name}")


SQUEUE_UNKNOWN_JOB = captured("slurm_squeue_unknown_job_22.05.txt").strip()
SLURM_CONTROLLER_DOWN = captured("slurm_squeue_controller_down_22.05.txt").strip()


def squeue_line(job_id: str, state: str, *, partition: str = "debug", nodes: str = "",
                time_left: str = "5:00", reason: str = "None", start: str = "N/A",
                name: str = "hpcnb") -> str:
    """A squeue line in hpcnb's --format (SQUEUE_FIELDS, '|' separated), for states no capture has."""
    values = {"%i": job_id, "%T": state, "%P": partition, "%N": nodes, "%L": time_left,
              "%r": reason, "%S": start, "%j": name}
    return "|".join(values[field] for field in SQUEUE_FIELDS)


def sacct_line(job_id: str, state: str, *, partition: str = "debug", nodes: str = "None assigned",
               exit_code: str = "0:0", reason: str = "None", name: str = "hpcnb") -> str:
    """An `sacct --parsable2` line in hpcnb's --format (SACCT_FIELDS)."""
    values = {"JobID": job_id, "State": state, "Partition": partition, "NodeList": nodes,
              "ExitCode": exit_code, "Reason": reason, "JobName": name}
    return "|".join(values[field] for field in SACCT_FIELDS)


# ---- the job's own files, as templates/launcher.py writes them -----------------------------------


def connection_json(job_id: str, *, node: str = "node01", host: str = "10.0.0.11", port: int = 8888,
                    token: str = "tok-3f9c", tunnel: str = "direct", started: float = EPOCH,
                    walltime_end: float | None = None) -> bytes:
    """connection.json as Launcher.write_connection writes it."""
    return json.dumps({
        "version": 1, "job_id": job_id, "host": host, "port": port, "socket": None,
        "token": token, "pid": 4242, "launcher_pid": 4241, "node": node, "started": started,
        "walltime_end": walltime_end, "tunnel": tunnel, "jupyter": "lab", "base_url": "/",
    }, indent=1).encode()


def ended_json(exit_code: int, reason: str = "Jupyter exited", *, ended: float = EPOCH) -> bytes:
    """`ended` as Launcher.write_ended writes it."""
    return json.dumps({"ended": ended, "exit_code": exit_code, "reason": reason,
                       "signal": None}).encode()


# ---- the clock -----------------------------------------------------------------------------------


class VirtualTimeExceeded(AssertionError):
    """A loop under test waited longer than the clock's limit: it would never have ended."""


class FakeClock(Clock):
    """Virtual time: monotonic() starts at 0 and moves only in sleep() and wait()."""

    def __init__(self, *, epoch: float = EPOCH, limit: float = 86_400.0) -> None:
        self.now = 0.0
        self.epoch = epoch
        self.limit = limit
        self.pauses: list[float] = []  # every sleep() and wait() asked for, in order
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.epoch + self.now

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run `action` when virtual time reaches `when` (during a sleep or a wait)."""
        heapq.heappush(self._timers, (when, next(self._seq), action))

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self._advance(self.now + seconds)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Like Event.wait: returns early (at the timer's time) when a timer sets `stop`."""
        self.pauses.append(seconds)
        if not stop.is_set():
            self._advance(self.now + seconds, stop)
        return stop.is_set()

    def _advance(self, target: float, stop: threading.Event | None = None) -> None:
        if target > self.limit:
            raise VirtualTimeExceeded(f"virtual time would pass {self.limit} s (now {self.now})")
        while self._timers and self._timers[0][0] <= target:
            when, _, action = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            action()
            if stop is not None and stop.is_set():
                return
        self.now = target


# ---- the remote ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One command the code under test ran."""

    time: float
    argv: tuple[str, ...]
    stdin: str | None = None


@dataclass(frozen=True)
class Read:
    """One read_file, and whether the file was there."""

    time: float
    path: str
    found: bool


@dataclass(frozen=True)
class _Failure:
    start: float
    end: float
    exit_status: int
    stderr: str
    error: Exception | None


# Commands answered from per-job records; the key of `qstat -x ...` (history) is "qstat -x".
STATUS_COMMANDS = ("squeue", "sacct", "qstat", "qstat -x")


def without_env(argv: list[str]) -> list[str]:
    """`env NAME=VALUE ... qstat -x ...` (hpcnb/schedulers/pbs.py's cache bypass) is qstat -x."""
    if argv and argv[0] == "env":
        rest = argv[1:]
        while rest and "=" in rest[0] and not rest[0].startswith("-"):
            rest = rest[1:]
        return rest
    return argv


def command_key(argv: Sequence[str]) -> str:
    """What a command is scripted under: its program, or "qstat -x" for PBS history queries."""
    if argv[0] == "qstat" and "-x" in argv[1:]:
        return "qstat -x"
    return argv[0]


def asked_ids(argv: Sequence[str]) -> list[str] | None:
    """The job ids a status command asks about (--jobs=a,b or qstat's operands); None: all."""
    for arg in argv[1:]:
        if arg.startswith("--jobs="):
            return arg.removeprefix("--jobs=").split(",")
    if argv[0] == "qstat":
        ids = [a for a in argv[1:] if not a.startswith("-")]
        return ids or None
    return None


Timeline = list[tuple[float, int, object]]


def _current(timeline: Timeline | None, now: float) -> object:
    """The latest value set at or before `now` (later entries win ties); None if none."""
    value: object = None
    for when, _, item in timeline or ():
        if when <= now:
            value = item
    return value


class FakeRemote:
    """The Remote protocol over a script; see the module docstring."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[Call] = []
        self.reads: list[Read] = []
        self.closed = 0
        self._records: dict[str, dict[str, Timeline]] = {}
        self._files: dict[str, Timeline] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._answers: dict[str, list[CommandResult]] = {}
        self._hooks: dict[str, list[Callable[[list[str]], None]]] = {}
        self._seq = itertools.count()

    # ---- writing the script --------------------------------------------------------------------

    def job(self, command: str, job_id: str, record: str | None, *, at: float = 0.0) -> None:
        """From `at` on, `command` (a STATUS_COMMANDS key) prints `record` for `job_id`, or does
        not know the job (None)."""
        assert command in STATUS_COMMANDS, command
        timeline = self._records.setdefault(command, {}).setdefault(job_id, [])
        self._add(timeline, at, record)

    def fail(self, command: str, *, stderr: str = "", exit_status: int = 1, start: float = 0.0,
             end: float = float("inf"), error: Exception | None = None) -> None:
        """In [start, end) `command` exits `exit_status` with `stderr` (or raises `error`)."""
        self._failures.setdefault(command, []).append(
            _Failure(start, end, exit_status, stderr, error))

    def answer(self, command: str, stdout: str = "", *, stderr: str = "", exit_status: int = 0) -> None:
        """Queue an answer for `command` (sbatch, scancel ...); the last one queued repeats."""
        self._answers.setdefault(command, []).append(CommandResult([command], exit_status, stdout, stderr))

    def on(self, command: str, hook: Callable[[list[str]], None]) -> None:
        """Call hook(argv) whenever `command` runs (e.g. scancel: the job ends a little later)."""
        self._hooks.setdefault(command, []).append(hook)

    def file(self, path: str, data: bytes | str | None, *, at: float = 0.0) -> None:
        """From `at` on, `path` (relative to the home directory) holds `data`; None: missing."""
        self._add(self._files.setdefault(path, []), at,
                  data.encode() if isinstance(data, str) else data)

    def handshake(self, job_id: str, *, at: float = 0.0, token: str = "tok-3f9c", node: str = "node01",
                  walltime_end: float | None = None) -> None:
        """connection.json of `job_id` from `at` on: its notebook answers."""
        self.file(hs.JobFiles("tb", job_id).connection,
                  connection_json(job_id, token=token, node=node, walltime_end=walltime_end), at=at)

    def ended(self, job_id: str, exit_code: int, *, at: float = 0.0, reason: str = "Jupyter exited") -> None:
        """`ended` of `job_id` from `at` on: its notebook has stopped with `exit_code`."""
        self.file(hs.JobFiles("tb", job_id).ended, ended_json(exit_code, reason), at=at)

    def log(self, job_id: str, data: bytes | str, *, at: float = 0.0) -> None:
        """job.log of `job_id` holds `data` (all of it, not an append) from `at` on."""
        self.file(hs.JobFiles("tb", job_id).log, data, at=at)

    def _add(self, timeline: Timeline, at: float, item: object) -> None:
        timeline.append((at, next(self._seq), item))
        timeline.sort(key=lambda entry: (entry[0], entry[1]))

    # ---- reading what happened -----------------------------------------------------------------

    def calls_to(self, command: str) -> list[Call]:
        return [c for c in self.calls if command_key(c.argv) == command]

    def times(self, command: str) -> list[float]:
        """The virtual times `command` ran at."""
        return [c.time for c in self.calls_to(command)]

    def read_times(self, path: str) -> list[float]:
        """The virtual times `path` was read at."""
        return [r.time for r in self.reads if r.path == path]

    def current(self, path: str) -> bytes | None:
        """What `path` holds now (not recorded as a read)."""
        data = _current(self._files.get(path), self.clock.now)
        assert data is None or isinstance(data, bytes)
        return data

    # ---- the Remote protocol -------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        args = [str(a) for a in argv]
        command = without_env(args)
        key = command_key(command)
        now = self.clock.now
        self.calls.append(Call(now, tuple(args), stdin))
        for hook in self._hooks.get(key, ()):
            hook(args)
        for failure in self._failures.get(key, ()):
            if failure.start <= now < failure.end:
                if failure.error is not None:
                    raise failure.error
                return CommandResult(args, failure.exit_status, "", failure.stderr)
        answers = self._answers.get(key)
        if answers:
            result = answers.pop(0) if len(answers) > 1 else answers[0]
            return CommandResult(args, result.exit_status, result.stdout, result.stderr)
        if key == "rm":
            for path in (a for a in args[1:] if not a.startswith("-")):
                self.file(path, None, at=now)
            return CommandResult(args, 0, "", "")
        if key in STATUS_COMMANDS:
            return self._status(key, command)
        if key in ("scancel", "qdel"):
            return CommandResult(args, 0, "", "")
        raise AssertionError(f"FakeRemote: nothing scripted for {args}")

    def _status(self, key: str, argv: list[str]) -> CommandResult:
        """What the real command prints for the ids asked: known jobs on stdout; for unknown ones
        squeue exits 1 when it knows none, sacct prints nothing, PBS qstat names each on stderr and
        exits 153 (PBSE_UNKJOBID & 0xff)."""
        timelines = self._records.get(key, {})
        ids = asked_ids(argv)
        if ids is None:
            ids = list(timelines)
        known = {}
        for job_id in ids:
            record = _current(timelines.get(job_id), self.clock.now)
            if record is not None:
                known[job_id] = str(record).rstrip("\n")
        sep = "\n\n" if key.startswith("qstat") else "\n"
        stdout = sep.join(known.values()) + "\n" if known else ""
        unknown = [i for i in ids if i not in known]
        if key == "squeue" and unknown and not known:
            return CommandResult(argv, 1, "", SQUEUE_UNKNOWN_JOB + "\n")
        if key.startswith("qstat") and unknown:
            return CommandResult(argv, 153, stdout, "".join(f"qstat: Unknown Job Id {i}\n" for i in unknown))
        return CommandResult(argv, 0, stdout, "")

    def read_file(self, path: str) -> bytes:
        data = self.current(path)
        self.reads.append(Read(self.clock.now, path, data is not None))
        if data is None:
            raise FileNotFoundError(path)
        return data

    def close(self) -> None:
        self.closed += 1
