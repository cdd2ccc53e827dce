"""Shell injection, property-based: every user-supplied value is refused with one clear line, or inert.

Values come from hypothesis: arbitrary unicode (NUL, newlines, quotes), shell payloads that would
leave a SENTINEL file behind if any shell ever executed them, leading dashes, very long strings.
They go in through the flags (build_request) and through a real TOML config file (load_cluster).

  * refused: UsageError / ConfigError, one line, naming the flag or the key (and the file);
  * inert: the rendered script (slurm, pbs, local) passes `bash -n`, every directive line is plain,
    and RUNNING it (HOME in a temp dir, the "cluster's python" a stub that records its environment)
    leaves no SENTINEL anywhere and hands every value to the launcher byte for byte.

Setup lines are shell code by design (they run), so the run check feeds them from a harmless
vocabulary of structure-breaking tokens and proves each stays inside its own line: a fixed last
setup line still runs, and so does the rest of the script.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hpcnb.config import ClusterConfig, load_cluster
from hpcnb.errors import ConfigError, UsageError
from hpcnb.render import render_script, shq
from hpcnb.request import build_request

BASH = shutil.which("bash") or "/bin/bash"
SCHEDULERS = ("slurm", "pbs", "local", "lsf", "sge")
DIRECTIVE = re.compile(r"^#(SBATCH|PBS|BSUB|\$) -[A-Za-z0-9 ._:=/@+,%-]+\Z")
SENTINEL = "SENTINEL"
# Render-only checks are cheap (one `bash -n`); the run checks start bash, mkdir, the stub...
RENDER_EXAMPLES = 1500  # flags: ~7 ms each (one `bash -n`)
CONFIG_EXAMPLES = 1200  # config: ~13 ms each (one TOML load per value, one `bash -n`)
RUN_EXAMPLES = 250  # ~10-20 ms each: bash, mkdir, the stub
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
RENDER = settings(max_examples=RENDER_EXAMPLES, deadline=None, suppress_health_check=_HEALTH)
CONFIG = settings(max_examples=CONFIG_EXAMPLES, deadline=None, suppress_health_check=_HEALTH)
RUN = settings(max_examples=RUN_EXAMPLES, deadline=None, suppress_health_check=_HEALTH)

PAYLOADS = [
    "$(touch SENTINEL)", "`touch SENTINEL`", ";touch SENTINEL", "'\"; touch SENTINEL; \"'",
    "'; touch SENTINEL; '", "\"; touch SENTINEL; \"", "\ntouch SENTINEL\n", "&& touch SENTINEL",
    "| touch SENTINEL", "; >SENTINEL", "$(touch ~/SENTINEL)", ";touch $HOME/SENTINEL",
    "${IFS}touch${IFS}SENTINEL", "<(touch SENTINEL)", ">(touch SENTINEL)", "\\'; touch SENTINEL #",
    "\nHPCNB_LAUNCHER_EOF\ntouch SENTINEL\n", ")$(touch SENTINEL)(", "}; touch SENTINEL; {",
    "$'\\x27'; touch SENTINEL", "\\\ntouch SENTINEL", "\rtouch SENTINEL", "\x00touch SENTINEL",
    "*", "~root", "$HOME", "%s", "{{ 7*7 }}", "{% raw %}", "-o", "--help", "\u2028touch SENTINEL",
    "é漢🐍", "\t",
]  # fmt: skip


def hostile() -> st.SearchStrategy[str]:
    fragment = st.one_of(st.sampled_from(PAYLOADS), st.text(max_size=6))
    return st.one_of(
        st.text(),
        st.sampled_from(PAYLOADS),
        st.lists(fragment, min_size=1, max_size=6).map("".join),
        st.tuples(st.sampled_from(["-", "--", "-o ", "--x="]), fragment).map("".join),
        st.integers(100, 20000).map(lambda n: ("$(touch SENTINEL)'\"`;\\ " * (n // 24 + 1))[:n]),
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),  # plausible, accepted
    )


# Setup lines execute by design: a vocabulary that can break any script structure, but that can
# only ever run echo/true/false/touch (no exit, exec, kill, loops, function names, PATH).
SETUP_TOKENS = [
    "'", '"', "`", "$(", ")", "(", "{", "}", ";", "&&", "||", "|", "&", "\\", "#", "<<EOF", "<<'X'",
    "EOF", " ", "echo", "true", "false", "touch SETUP_RAN", "$HOME", "${", "[[", "]]", "if", "then",
    "fi", "do", "done", "case", "esac", "in", "HPCNB_LAUNCHER_EOF", "!", "*", "?", "~", "=", "$'",
    "\t", ">", "<",
]  # fmt: skip
setup_line = st.lists(st.sampled_from(SETUP_TOKENS), max_size=12).map("".join)
AFTER_SETUP = "export HPCNB_TEST_AFTER_SETUP=reached"

FLAGS = {
    "partition": "--partition", "account": "--account", "name": "--name",
    "notebook_dir": "--notebook-dir", "time": "--time", "mem": "--mem", "cpus": "--cpus",
    "gpus": "--gpus", "hours": "--hours",
}  # fmt: skip


def toml_str(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, plus DEL, which TOML wants escaped too."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    return "[" + ", ".join(toml_str(v) for v in value) + "]" if isinstance(value, list) else toml_str(value)


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """A temp dir with the stub python in a folder whose name is itself a payload; HPCNB_CONFIG."""
    root = Path(tempfile.mkdtemp(prefix="hpcnb-inj-"))
    stub_dir = root / "bin $(touch SENTINEL) ;'\"`touch SENTINEL`"
    stub_dir.mkdir()
    stub = stub_dir / "python3"
    stub.write_text('#!/bin/bash\nenv -0 >"$HPCNB_SESSION_DIR/stub.env"\n')
    stub.chmod(0o755)
    # The scripts run with PATH = only what they need: an arbitrary `python` value can then only
    # ever name one of these (hostname is a stub: as root, `hostname ARG` would set it).
    tools = root / "tools"
    tools.mkdir()
    for tool in ("mkdir", "chmod", "rm", "date", "cat", "env", "touch", "bash"):
        found = shutil.which(tool)
        assert found, tool
        (tools / tool).symlink_to(found)
    (tools / "hostname").write_text("#!/bin/bash\necho testnode\n")
    (tools / "hostname").chmod(0o755)
    saved = {k: os.environ.get(k) for k in ("HPCNB_CONFIG", "HPCNB_CLUSTER", "XDG_CONFIG_HOME")}
    (root / "config.toml").write_text("")
    os.environ["HPCNB_CONFIG"] = str(root / "config.toml")
    os.environ.pop("HPCNB_CLUSTER", None)
    try:
        yield root
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(root, ignore_errors=True)


def stub_path(ws: Path) -> str:
    return str(next(ws.glob("bin */python3")))


def assert_clear_refusal(err: Exception, names: list[str]) -> None:
    text = str(err)
    assert "\n" not in text and "\r" not in text, f"refusal is not one line: {text!r}"
    assert any(n in text for n in names), f"refusal names none of {names}: {text}"


def bash_n(script: str) -> None:
    proc = subprocess.run([BASH, "-n"], input=script.encode(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


def check_static(script: str, cfg: ClusterConfig, notebook_dir: str | None) -> None:
    event("rendered")
    bash_n(script)
    for line in script.split("\n"):
        if line.startswith(("#SBATCH", "#PBS", "#BSUB", "#$")):
            assert DIRECTIVE.match(line), line
    exports = {}
    for line in script.split("\n"):
        if line.startswith("export HPCNB_") and "=" in line:
            key, _, rest = line[len("export ") :].partition("=")
            exports[key] = shlex.split(rest)
    assert exports["HPCNB_PYTHON"] == [cfg.python]
    assert exports["HPCNB_CLUSTER"] == [cfg.name]
    if notebook_dir is not None:
        assert exports["HPCNB_NOTEBOOK_DIR"] == [notebook_dir]
    for i, line in enumerate(cfg.setup, 1):
        assert (
            f' -n -c {shq(line)}; then eval {shq(line)} || hpcnb_setup_failed {i} {shq(line)} "exited $?" 3;'
            in script
        )


def parses(line: str) -> bool:
    return subprocess.run([BASH, "-n", "-c", line], capture_output=True, check=False).returncode == 0


def run_script(script: str, ws: Path) -> tuple[Path, dict[str, str] | None, int]:
    """Run SCRIPT as the scheduler would; (its work dir, the env the stub python saw, exit code)."""
    work = Path(tempfile.mkdtemp(dir=ws, prefix="run-"))
    (work / "home").mkdir()
    (work / "job.sh").write_text(script)
    env = {"HOME": str(work / "home"), "PATH": str(ws / "tools"), "LANG": "C.UTF-8",
           "HPCNB_JOB_ID": "4242", "SLURM_JOB_ID": "4242", "PBS_JOBID": "4242",
           "LSB_JOBID": "4242", "JOB_ID": "4242"}  # fmt: skip
    proc = subprocess.Popen(
        [BASH, "job.sh"], cwd=work, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    sessions = list((work / "home" / ".hpcnb" / "sessions").glob("*/4242"))
    assert len(sessions) == 1, out
    session = sessions[0]
    recorded = session / "stub.env"
    seen = None
    if recorded.exists():
        seen = dict(item.split("=", 1) for item in recorded.read_text().split("\0") if "=" in item)
    return work, seen, proc.returncode


def assert_nothing_executed(work: Path) -> None:
    hits = [p for p in work.rglob("*") if SENTINEL in p.name]
    logs = "".join(log.read_text(errors="replace")  # bash may quote a byte of the line as it is
                   for log in (work / "home/.hpcnb/sessions").glob("*/4242/job.log"))
    assert not hits, f"a value was executed: {hits}\n{logs}"


def accepted_flags(cfg: ClusterConfig, values: dict[str, str]) -> dict[str, str]:
    """Each value on its own: refused with one line naming its flag, or kept."""
    kept = {}
    for key, value in values.items():
        try:
            build_request(cfg, **{key: value})
        except UsageError as e:
            assert_clear_refusal(e, [FLAGS[key]])
            event(f"refused {key}")
            continue
        kept[key] = value
    if "hours" in kept and "time" in kept:  # both valid, but one of them at a time
        del kept["time"]
    return kept


def write_config(ws: Path, name: str, table: dict[str, Any]) -> None:
    lines = [f"[clusters.{toml_str(name)}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    (ws / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def refused_config(ws: Path, name: str, table: dict[str, Any], key: str) -> bool:
    """True if the config is refused with one line naming KEY and the file; False if it loads."""
    write_config(ws, name, table)
    try:
        load_cluster(name or "x")
    except ConfigError as e:
        assert_clear_refusal(e, [key])
        assert str(ws / "config.toml") in str(e), str(e)
        event(f"refused {key}")
        return True
    return False


def accepted_config(ws: Path, name: str, base: dict[str, Any], values: dict[str, Any]) -> ClusterConfig:
    """Each value (each list item) on its own: refused naming its key, or kept; then all kept ones
    together must load."""
    name = "c1" if refused_config(ws, name, base, "cluster name") else name
    kept: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, list):
            kept[key] = [v for v in value if not refused_config(ws, name, {**base, key: [v]}, key)]
        elif not refused_config(ws, name, {**base, key: value}, key):
            kept[key] = value
    write_config(ws, name, {**base, **kept})
    return load_cluster(name or "x")


def request_for(cfg: ClusterConfig) -> Any:
    # config values were checked: the request must not refuse them (a table named like a shipped
    # site extends that site, which may require an account)
    return build_request(cfg, account="ab12" if cfg.account_required else None)


# ------------------------------------------------------------------ the flags

flag_values = st.fixed_dictionaries({}, optional={k: hostile() for k in FLAGS})


@RENDER
@given(values=flag_values, scheduler=st.sampled_from(SCHEDULERS))
def test_flags_are_refused_or_render_inert(workspace: Path, values: dict[str, str], scheduler: str) -> None:
    cfg = load_cluster("local")
    request = build_request(cfg, **accepted_flags(cfg, values))
    check_static(render_script(cfg, request, scheduler), cfg, request.notebook_dir)


@RUN
@given(
    values=st.fixed_dictionaries({"notebook_dir": hostile(), "name": hostile(), "partition": hostile()}),
    scheduler=st.sampled_from(SCHEDULERS),
)
def test_flags_never_execute_when_the_script_runs(
    workspace: Path, values: dict[str, str], scheduler: str
) -> None:
    cfg = dataclasses.replace(load_cluster("local"), python=stub_path(workspace))
    request = build_request(cfg, **accepted_flags(cfg, values))
    work, seen, code = run_script(render_script(cfg, request, scheduler), workspace)
    assert_nothing_executed(work)
    event("ran the script")
    assert seen is not None and code == 0, "".join(
        log.read_text() for log in (work / "home/.hpcnb/sessions").rglob("job.log"))
    assert seen.get("HPCNB_NOTEBOOK_DIR") == request.notebook_dir
    assert seen["HPCNB_PYTHON"] == cfg.python
    shutil.rmtree(work)


# ------------------------------------------------------------------ the config file

CONFIG_KEYS = {
    "setup": st.lists(hostile(), max_size=3),
    "extra_directives": st.lists(st.one_of(hostile(), st.sampled_from(
        ["--constraint=gpu", "-l select=1:ncpus=4", "-l storage=gdata/ab12+scratch/ab12", "-C cpu"])),
        max_size=3),
    "python": hostile(),
    "notebook_dir": hostile(),
    "partition": hostile(),
    "account": hostile(),
    "login_host": hostile(),
    "user": hostile(),
    "jupyter": st.one_of(st.sampled_from(["lab", "notebook"]), hostile()),
    "tunnel": st.one_of(st.sampled_from(["direct", "node-ssh", "socket"]), hostile()),
}  # fmt: skip
cluster_name = st.one_of(st.just("c1"), hostile())


@CONFIG
@given(name=cluster_name, values=st.fixed_dictionaries({}, optional=CONFIG_KEYS),
       scheduler=st.sampled_from(SCHEDULERS))  # fmt: skip
def test_config_values_are_refused_or_render_inert(
    workspace: Path, name: str, values: dict[str, Any], scheduler: str
) -> None:
    base = {"scheduler": scheduler, "login_host": "login.example.org"}
    cfg = accepted_config(workspace, name, base, values)
    request = request_for(cfg)
    check_static(render_script(cfg, request, scheduler), cfg, request.notebook_dir)


@RUN
@given(
    name=cluster_name,
    setup=st.lists(setup_line, max_size=3),
    values=st.fixed_dictionaries({}, optional={k: CONFIG_KEYS[k] for k in
                                               ("python", "notebook_dir", "extra_directives")}),
    scheduler=st.sampled_from(SCHEDULERS),
)  # fmt: skip
def test_config_values_never_execute_and_setup_lines_stay_in_their_line(
    workspace: Path, name: str, setup: list[str], values: dict[str, Any], scheduler: str
) -> None:
    stub = stub_path(workspace)
    if shutil.which(values.get("python") or stub, path=str(workspace / "tools")):
        values.pop("python", None)  # names a real program: that is the user's interpreter choice
    base = {"scheduler": scheduler, "login_host": "login.example.org", "python": stub}
    setup = [
        line for line in setup if not refused_config(workspace, "c1", {**base, "setup": [line]}, "setup")
    ]
    base["setup"] = [*setup, AFTER_SETUP]
    cfg = accepted_config(workspace, name, base, values)
    request = request_for(cfg)
    work, seen, code = run_script(render_script(cfg, request, scheduler), workspace)
    assert_nothing_executed(work)
    event("ran the script")
    folder = work / "home/.hpcnb/sessions" / cfg.machine / "4242"
    log = (folder / "job.log").read_text(errors="replace")
    invalid = [i for i, line in enumerate(setup, 1) if not parses(line)]
    failed = re.search(r"^hpcnb: setup line (\d+) exited \d+, stopping", log, re.MULTILINE)
    if failed and not any(i < int(failed[1]) for i in invalid):
        # a valid line that failed stops the job there, and says which (its own command's error
        # is in the log above it)
        ended = json.loads((folder / "ended").read_text())
        assert code == 3 and seen is None, log
        assert ended["reason"].startswith(f"setup line {failed[1]} exited"), log
    elif invalid:  # the job stops at the first line that is not valid shell, and says which
        ended = json.loads((folder / "ended").read_text())
        assert code == 2 and seen is None, log
        assert ended["reason"] == f"setup line {invalid[0]} is not valid shell", log
    elif cfg.python == stub:
        assert seen is not None and code == 0, log
        assert seen["HPCNB_TEST_AFTER_SETUP"] == "reached", log  # no setup line swallowed the next
        assert seen["HPCNB_PYTHON"] == stub and seen["HPCNB_CLUSTER"] == cfg.name
        assert seen.get("HPCNB_NOTEBOOK_DIR") == request.notebook_dir
    else:  # an arbitrary python that names no program: the job says so and stops
        assert seen is None and code == 127, log
        assert "not found on this node" in log, log
    shutil.rmtree(work)
