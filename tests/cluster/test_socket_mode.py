"""Socket tunnel mode on the real sshd: no TCP port on the node, and only the owner gets in.

Jupyter listens on a 0600 unix socket in the 0700 session dir; hpcnb's last hop is OpenSSH's
direct-streamlocal channel, which the node's sshd opens AS the connecting user. So a second
ordinary user on the same node can neither connect to the socket nor forward to it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures import on_node, ssh, ssh_argv
from hpcnb_driver import Hpcnb
from testbed import topology

pytestmark = pytest.mark.cluster
CLUSTER = "testbed-socket"
OWNER, OTHER = topology.USERS[0], topology.USERS[1]

# The sockets process PID holds: TCP ones in LISTEN state (v4 and v6) and unix ones with a path.
SOCKETS_OF = r"""
import json, os, sys
pid = sys.argv[1]
inodes = set()
for fd in os.listdir("/proc/%s/fd" % pid):
    try:
        target = os.readlink("/proc/%s/fd/%s" % (pid, fd))
    except OSError:
        continue
    if target.startswith("socket:["):
        inodes.add(target[8:-1])
tcp = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    with open(table) as fh:
        for line in fh.readlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:
                tcp.append(cols[1])
unix = []
with open("/proc/net/unix") as fh:
    for line in fh.readlines()[1:]:
        cols = line.split()
        if len(cols) >= 8 and cols[6] in inodes:
            unix.append(cols[7])
with open("/proc/%s/cmdline" % pid, "rb") as fh:
    cmdline = fh.read().replace(b"\0", b" ").decode()
print(json.dumps({"sockets": len(inodes), "tcp_listen": tcp, "unix": unix, "cmdline": cmdline}))
"""

CONNECT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
    s.sendall(b"GET /api HTTP/1.0\r\n\r\n")
    print("connected", s.recv(100)[:12])
except OSError as e:
    print(type(e).__name__)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_through_openssh_forward(user: str, node_addr: str, sock: str) -> tuple[str, str]:
    """`ssh -N -L 127.0.0.1:PORT:SOCK user@node` (OpenSSH, via login1); GET /api through it.
    Returns (outcome, ssh's stderr): "200", or the error the local end saw."""
    port = free_port()
    argv = ssh_argv(node_addr, user, jump=True)
    argv = [*argv[:-1], "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{port}:{sock}", argv[-1]]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )  # its ProxyCommand ssh goes with it (killpg)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"ssh -L exited {proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=20) as response:
                outcome = str(response.status)
        except OSError as e:  # RemoteDisconnected, ConnectionResetError, URLError ...
            outcome = f"{type(e).__name__}: {e}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    return outcome, stderr


@pytest.fixture(scope="module")
def running(testbed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    hpcnb = Hpcnb(tmp_path_factory.mktemp("socket") / "state", config=testbed)
    job_id = hpcnb.submit(CLUSTER, "--hours", "0.5")
    try:
        with hpcnb.attach(job_id, CLUSTER) as attached:
            read = ssh(f"cat ~/.hpcnb/sessions/{CLUSTER}/{job_id}/connection.json")
            assert read.returncode == 0, read.stderr
            conn = json.loads(read.stdout)
            assert conn["tunnel"] == "socket" and conn["socket"] and conn["port"] is None, conn
            conn["node_addr"] = next(n.addr for n in topology.NODES if n.name == conn["node"])
            yield {"job_id": job_id, "attached": attached, "conn": conn}
    finally:
        hpcnb.run("cancel", job_id, "--cluster", CLUSTER)


def test_jupyter_listens_on_no_tcp_port_only_on_its_socket(running: dict[str, Any]) -> None:
    conn = running["conn"]
    proc = on_node(conn["node"], shlex.join(["python3", "-c", SOCKETS_OF, str(conn["pid"])]))
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert "jupyter" in found["cmdline"], found
    assert found["tcp_listen"] == [], f"Jupyter listens on TCP on the node: {found}"
    assert conn["socket"] in found["unix"], found
    ss = on_node(conn["node"], "ss -H -ltnp")
    assert f"pid={conn['pid']}," not in ss.stdout, ss.stdout


def test_socket_is_0600_in_a_0700_dir(running: dict[str, Any]) -> None:
    sock = running["conn"]["socket"]
    proc = on_node(
        running["conn"]["node"], shlex.join(["stat", "-c", "%a %F %U", sock, str(Path(sock).parent)])
    )
    assert proc.stdout.splitlines() == ["600 socket hpcuser", "700 directory hpcuser"], (
        proc.stdout + proc.stderr
    )


def test_another_user_on_the_node_cannot_connect(running: dict[str, Any]) -> None:
    conn = running["conn"]
    connect = shlex.join(["python3", "-c", CONNECT, conn["socket"]])
    theirs = on_node(conn["node"], connect, user=OTHER)
    assert theirs.stdout.strip() == "PermissionError", theirs.stdout + theirs.stderr
    mine = on_node(conn["node"], connect)  # the same probe as the owner: the socket does answer
    assert mine.stdout.startswith("connected b'HTTP/1.1"), mine.stdout + mine.stderr


def test_another_user_cannot_forward_to_it_with_openssh(running: dict[str, Any]) -> None:
    conn = running["conn"]
    outcome, stderr = get_through_openssh_forward(OTHER, conn["node_addr"], conn["socket"])
    assert outcome != "200", outcome
    assert "open failed" in stderr or "connect failed" in stderr, stderr
    # the same forward as the owner works, so what stopped hpcuser2 is the socket's permissions
    outcome, stderr = get_through_openssh_forward(OWNER, conn["node_addr"], conn["socket"])
    assert outcome in {"200", "403"}, (outcome, stderr)


def test_the_owner_gets_in_through_hpcnb(running: dict[str, Any]) -> None:
    attached = running["attached"]
    status, _ = attached.http("GET", "/api/status")
    assert status == 200
    assert attached.execute(attached.start_kernel(), "21*2") == "42"
