"""Secrets on the testbed: while a notebook runs, its token is nowhere another user can look.

One real job (Slurm, direct tunnel) for the whole module. The token never goes on a command line
here either: the probes get it on stdin, so a probe cannot find its own argv.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures import on_node, ssh
from hpcnb_driver import Attached, Hpcnb, keeper_pids, keepers_folder
from testbed import topology

pytestmark = pytest.mark.cluster
CLUSTER = "testbed"
OTHER = topology.USERS[1]  # hpcuser2, a second ordinary user

# Every process's argv on this host (the testbed's hosts share one pid namespace, so a node sees
# the login node's and the laptop's processes too); the token comes on stdin.
ARGV_SCAN = r"""
import glob, sys
token = sys.stdin.read().strip().encode()
seen, jupyter, hits = 0, 0, []
for path in glob.glob("/proc/[0-9]*/cmdline"):
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        continue
    seen += 1
    jupyter += b"jupyter" in data
    if token in data:
        hits.append(path + " " + data.replace(b"\0", b" ")[:300].decode(errors="replace"))
print(__import__("json").dumps({"seen": seen, "jupyter": jupyter, "hits": hits}))
"""

# As another user: can the Jupyter process's environment (where the token is) be read?
ENVIRON_PROBE = r"""
import sys
pid = sys.argv[1]
try:
    with open("/proc/%s/environ" % pid, "rb") as fh:
        token = sys.stdin.read().strip().encode()
        print("readable", (b"JUPYTER_TOKEN=" + token) in fh.read())
except PermissionError:
    print("denied")
"""


def python_on(run: Any, script: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run(shlex.join(["python3", "-c", script, *args]), **kw)


def local_listeners(pid: int) -> list[tuple[str, int]]:
    """(address hex, port) of every TCP socket in LISTEN state that process PID holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if str(target).startswith("socket:["):
            inodes.add(str(target)[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                addr, port = cols[1].split(":")
                found.append((addr, int(port, 16)))
    return found


@pytest.fixture(scope="module")
def running(testbed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    hpcnb = Hpcnb(tmp_path_factory.mktemp("secrets") / "state", config=testbed)
    job_id = hpcnb.submit(CLUSTER, "--hours", "0.5")
    try:
        with hpcnb.attach(job_id, CLUSTER) as attached:
            session = f"~/.hpcnb/sessions/{CLUSTER}/{job_id}"
            read = ssh(f"cat {session}/connection.json")
            assert read.returncode == 0, read.stderr
            conn = json.loads(read.stdout)
            assert conn["token"] == attached.token
            yield {"job_id": job_id, "attached": attached, "conn": conn, "session": session}
    finally:
        hpcnb.run("cancel", job_id, "--cluster", CLUSTER)


def test_token_is_in_no_process_argv_on_node_login_or_laptop(running: dict[str, Any]) -> None:
    conn = running["conn"]
    token = conn["token"]
    node = on_node(conn["node"], "true")
    assert node.returncode == 0, node.stderr
    for where, run in (
        (conn["node"], lambda cmd, **kw: on_node(conn["node"], cmd, **kw)),
        ("login1", lambda cmd, **kw: ssh(cmd, **kw)),
        (
            "laptop",
            lambda cmd, **kw: subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, **kw),
        ),
    ):
        proc = python_on(run, ARGV_SCAN, input=token + "\n")
        assert proc.returncode == 0, (where, proc.stderr)
        result = json.loads(proc.stdout)
        assert result["hits"] == [], f"token on a command line on {where}: {result['hits']}"
        assert result["seen"] > 10, (where, result)
        if where == conn["node"]:
            assert result["jupyter"] >= 1, "the scan did not see Jupyter's own process"


def test_the_argv_scan_finds_a_planted_canary(running: dict[str, Any]) -> None:
    node = running["conn"]["node"]
    canary = f"hpcnb-canary-{uuid.uuid4().hex}"
    scan = shlex.join(["python3", "-c", ARGV_SCAN])
    proc = on_node(node, f"bash -c 'sleep 20' {canary} & {scan}; kill $!", input=canary)
    hits = json.loads(proc.stdout)["hits"]
    assert any(canary in hit and "sleep" in hit for hit in hits), proc.stdout + proc.stderr


def test_token_is_in_jupyters_environment_which_others_cannot_read(running: dict[str, Any]) -> None:
    conn = running["conn"]
    mine = python_on(lambda cmd, **kw: on_node(conn["node"], cmd, **kw), ENVIRON_PROBE, str(conn["pid"]),
                     input=conn["token"])  # fmt: skip
    assert mine.stdout.split() == ["readable", "True"], mine.stdout + mine.stderr
    theirs = python_on(lambda cmd, **kw: on_node(conn["node"], cmd, user=OTHER, **kw), ENVIRON_PROBE,
                       str(conn["pid"]), input="x")  # fmt: skip
    assert theirs.stdout.strip() == "denied", theirs.stdout + theirs.stderr


def test_token_is_not_in_what_the_scheduler_shows(running: dict[str, Any]) -> None:
    job_id, token = running["job_id"], running["conn"]["token"]
    for argv in (
        ["scontrol", "show", "job", "-dd", job_id],
        ["scontrol", "write", "batch_script", job_id, "-"],
        ["qstat", "-f", job_id],
    ):
        proc = ssh(shlex.join(argv))
        assert proc.returncode == 0, (argv, proc.stderr)
        assert job_id in proc.stdout or "hpcnb" in proc.stdout, (argv, proc.stdout)
        assert token not in proc.stdout + proc.stderr, f"token in `{shlex.join(argv)}`"
    script = ssh(f"scontrol write batch_script {job_id} -").stdout
    assert "HPCNB_LAUNCHER_EOF" in script and "JUPYTER_TOKEN" not in script.split("HPCNB_LAUNCHER_EOF")[0]


def test_session_dir_0700_and_handshake_files_0600(running: dict[str, Any]) -> None:
    s = running["session"]
    files = ["connection.json", "token", "job.log", "launcher.py"]
    dirs = f"~/.hpcnb ~/.hpcnb/sessions ~/.hpcnb/sessions/{CLUSTER} {s}"
    proc = ssh(f"stat -c '%a %U %n' {dirs} " + " ".join(f"{s}/{f}" for f in files))
    assert proc.returncode == 0, proc.stderr
    modes = [line.split()[:2] for line in proc.stdout.splitlines()]
    assert modes == [["700", "hpcuser"]] * 4 + [["600", "hpcuser"]] * len(files), proc.stdout


def test_another_user_cannot_read_the_session(running: dict[str, Any]) -> None:
    job_id, conn = running["job_id"], running["conn"]
    session = f"/home/{topology.USERS[0]}/.hpcnb/sessions/{CLUSTER}/{job_id}"
    for where, run in (
        ("login1", lambda cmd: ssh(cmd, user=OTHER)),
        (conn["node"], lambda cmd: on_node(conn["node"], cmd, user=OTHER)),
    ):
        for cmd in (f"cat {session}/connection.json", f"cat {session}/token", f"ls {session}"):
            proc = run(cmd)
            assert proc.returncode != 0, (where, cmd, proc.stdout)
            assert "Permission denied" in proc.stderr, (where, cmd, proc.stderr)
            assert conn["token"] not in proc.stdout


def test_local_listener_is_on_loopback_only(running: dict[str, Any]) -> None:
    attached: Attached = running["attached"]
    # hpcnb's own process and its keeper (hpcnb.keeper), which serves the tunnel
    listeners = [found for pid in (attached.proc.pid, *keeper_pids(keepers_folder()))
                 for found in local_listeners(pid)]
    assert ("0100007F", attached.port) in listeners, listeners
    assert all(addr == "0100007F" for addr, _ in listeners), listeners
    status, _ = attached.http("GET", "/api/status")
    assert status == 200
