"""The kept connection (hpcnb.keeper) on the testbed: one login for a day's commands, a tunnel that
survives a dropped login on its same port, and its failures each in one line.

The MFA day runs through the gateway (publickey + TOTP, tests/testbed/testbed/totp.py as
HPCNB_ASKPASS, which logs every prompt).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fixtures import gateway_env, prompts, seed_session, sshd_pids_serving
from hpcnb_driver import Background, Hpcnb, derived_config, keeper_pids, keepers_folder, stop_keepers
from testbed import topology

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("alone")]


def _kill(pids: list[int]) -> None:
    for pid in pids:
        subprocess.run(["pkill", "-KILL", "-P", str(pid)], check=False)
        subprocess.run(["kill", "-KILL", str(pid)], check=False)


_SEEDED = iter(range(900000, 999999))


def _contact(hpcnb: Hpcnb, cluster: str = "testbed", **kw) -> subprocess.CompletedProcess[str]:
    """`hpcnb list` with a (made-up) running session in the store, so it asks the cluster: a
    command that needs the login. The session is new each time (the last list saw it gone)."""
    seed_session(Path(hpcnb.env["HPCNB_STATE_DIR"]), cluster, str(next(_SEEDED)))
    return hpcnb.run("list", "--cluster", cluster, **kw)


def _connections(hpcnb: Hpcnb) -> list[dict]:
    proc = hpcnb.run("connections", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def mfa(testbed, tmp_path) -> Hpcnb:
    state = tmp_path / "state"
    state.mkdir()
    h = Hpcnb(state, testbed, home=tmp_path)
    h.env.update(gateway_env(tmp_path))
    return h


def test_a_days_work_through_mfa_asks_two_codes(mfa, tmp_path):
    """submit, list, attach, logs, detach, attach again, one forced drop of the login connection,
    list, cancel: the first login and the one after the drop, nothing else."""
    cluster = "testbed-jump"
    job_id = mfa.submit(cluster, "--hours", "0.5")
    try:
        assert len(prompts(tmp_path)) == 1
        assert [r["job_id"] for r in mfa.list_json(cluster)] == [job_id]
        with mfa.attach(job_id, cluster) as attached:
            kernel = attached.start_kernel()
            attached.execute(kernel, "kept = 41")
        assert mfa.run("logs", job_id, "--cluster", cluster).returncode == 0
        with mfa.attach(job_id, cluster) as attached:
            port = attached.port
            assert attached.execute(kernel, "kept + 1").strip() == "42"
            [keeper] = _connections(mfa)
            assert keeper["tunnels"] and keeper["tunnels"][0]["port"] == port
            _kill(sshd_pids_serving([keeper["pid"]], topology.GATEWAY, topology.GATEWAY_LAPTOP_ADDR))
            # The browser's next request: the keeper logs in again (code 2), on the same port.
            deadline = time.monotonic() + 90
            while True:
                try:
                    assert attached.execute(kernel, "kept * 2", timeout=30).strip() == "82"
                    break
                except (OSError, AssertionError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            assert attached.port == port
        assert [r["job_id"] for r in mfa.list_json(cluster)] == [job_id]
    finally:
        cancelled = mfa.run("cancel", job_id, "--cluster", cluster)
    assert cancelled.returncode == 0, cancelled.stderr
    asked = prompts(tmp_path)
    assert len(asked) == 2, asked
    [keeper] = _connections(mfa)
    assert keeper["logins"] == 2


def test_without_a_keeper_every_command_asks(testbed, tmp_path):
    config = derived_config(tmp_path / "hpcnb.toml", testbed, {
        "jump-nokeeper": ("testbed-jump", {"persist": "no"})})
    hpcnb = Hpcnb(tmp_path / "state", config=config, home=tmp_path)
    hpcnb.env.update(gateway_env(tmp_path))
    for _ in range(2):
        assert _contact(hpcnb, "jump-nokeeper").returncode == 0
    assert len(prompts(tmp_path)) == 2
    assert _connections(hpcnb) == []


def test_two_commands_at_once_start_exactly_one_keeper(testbed, tmp_path):
    hpcnb = Hpcnb(tmp_path / "state", config=testbed)
    seed_session(tmp_path / "state", "testbed")
    procs = [Background(hpcnb, "list", "--cluster", "testbed", "--json") for _ in range(4)]
    for proc in procs:
        assert proc.finish(120) == 0, proc.stderr()
    found = _connections(hpcnb)
    assert len(found) == 1, found
    assert len(keeper_pids(keepers_folder())) == 1


def test_a_killed_keeper_is_replaced_by_the_next_command(testbed, tmp_path):
    hpcnb = Hpcnb(tmp_path / "state", config=testbed)
    assert _contact(hpcnb).returncode == 0
    [old] = keeper_pids(keepers_folder())
    os.kill(old, signal.SIGKILL)  # its socket and info file stay behind: a stale endpoint
    proc = _contact(hpcnb)
    assert proc.returncode == 0, proc.stderr
    [new] = [k["pid"] for k in _connections(hpcnb)]
    assert new != old


def test_keeper_killed_under_an_attach_ends_it_in_one_line(testbed, tmp_path):
    hpcnb = Hpcnb(tmp_path / "state", config=testbed)
    job_id = hpcnb.submit("testbed", "--hours", "0.5")
    attach = Background(hpcnb, "attach", job_id, "--cluster", "testbed", "--no-browser")
    try:
        attach.wait_for(r"^http://127\.0\.0\.1:\d+/lab\?token=", 60)
        for pid in keeper_pids(keepers_folder()):
            os.kill(pid, signal.SIGKILL)
        assert attach.finish(60) == 12, attach.stderr()
        errors = [ln for ln in attach.stderr().splitlines() if "error" in ln]
        assert len(errors) == 1 and "keeper" in errors[0], attach.stderr()
        assert "Traceback" not in attach.stderr()
    finally:
        attach.stop()
        hpcnb.run("cancel", job_id, "--cluster", "testbed")


def test_logout_ends_it_and_the_next_command_logs_in_again(testbed, tmp_path):
    hpcnb = Hpcnb(tmp_path / "state", config=testbed)
    assert _contact(hpcnb).returncode == 0
    [first] = _connections(hpcnb)
    out = hpcnb.run("logout", "--cluster", "testbed")
    assert out.returncode == 0 and "logged out of hpcuser@10.213.0.2:22" in out.stderr + out.stdout
    assert _connections(hpcnb) == []
    assert _contact(hpcnb).returncode == 0
    [second] = _connections(hpcnb)
    assert second["pid"] != first["pid"]


def test_another_local_user_is_refused(testbed, tmp_path):
    hpcnb = Hpcnb(tmp_path / "state", config=testbed)
    assert _contact(hpcnb).returncode == 0
    [keeper] = _connections(hpcnb)
    socket_path = keepers_folder() / f"{keeper['key']}.sock"
    other = topology.USERS[0]  # hpcuser, an ordinary user on this machine too
    probe = ("from multiprocessing.connection import Client\n"
             "import sys\n"
             "try:\n"
             f"    Client({str(socket_path)!r}, family='AF_UNIX', authkey=b'guess')\n"
             "except Exception as exc:\n"
             "    print(type(exc).__name__); sys.exit(0)\n"
             "print('connected'); sys.exit(1)\n")
    proc = subprocess.run(["su", other, "-s", "/bin/sh", "-c", f"/usr/bin/python3 -c \"{probe}\""],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "PermissionError"


def test_a_keepers_folder_of_another_user_is_refused(testbed, tmp_path):
    folder = Path("/tmp") / f"hpcnb-other-{os.getpid()}"
    folder.mkdir(mode=0o700)
    try:
        subprocess.run(["chown", topology.USERS[0], str(folder)], check=True)
        hpcnb = Hpcnb(tmp_path / "state", config=testbed)
        hpcnb.env["HPCNB_RUNTIME_DIR"] = str(folder)
        proc = _contact(hpcnb)
        assert proc.returncode == 12, proc.stderr
        assert proc.stderr.count("\n") == 1 and "is not a folder of this user's" in proc.stderr
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_no_space_for_the_keepers_files_is_one_line(testbed, tmp_path):
    folder = Path("/tmp") / f"hpcnb-full-{os.getpid()}"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", str(folder)], check=True)
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={folder}/fill", "bs=4k", "count=64"],
                       capture_output=True, check=False)
        hpcnb = Hpcnb(tmp_path / "state", config=testbed)
        hpcnb.env["HPCNB_RUNTIME_DIR"] = str(folder)
        proc = _contact(hpcnb, timeout=60)
        assert proc.returncode == 12, proc.stderr
        assert proc.stderr.count("\n") == 1 and "no space left" in proc.stderr, proc.stderr
    finally:
        stop_keepers(folder)
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


def test_the_keeper_outlives_the_terminal_that_started_it(testbed, tmp_path):
    """`hpcnb attach` in a terminal (a pty) that then closes: the attach gets SIGHUP and ends, its
    keeper (a session of its own) stays and serves the next command without a new login."""
    import pty
    import sys

    hpcnb = Hpcnb(tmp_path / "state", config=testbed)
    job_id = hpcnb.submit("testbed", "--hours", "0.5")
    try:
        [keeper] = keeper_pids(keepers_folder())
        pid, master = pty.fork()
        if pid == 0:  # the child: attach, on the pty as its terminal
            os.execve(sys.executable, [sys.executable, "-m", "hpcnb", "attach", job_id, "--cluster",
                                       "testbed", "--no-browser"], hpcnb.env)
        seen = b""
        deadline = time.monotonic() + 60
        while b"/lab?token=" not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
        assert b"/lab?token=" in seen, seen.decode(errors="replace")
        os.close(master)  # the terminal window closes
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0
        os.kill(keeper, 0)  # still there
        [described] = _connections(hpcnb)
        assert described["pid"] == keeper and described["logins"] == 1
        assert _contact(hpcnb).returncode == 0
        assert _connections(hpcnb)[0]["logins"] == 1
    finally:
        hpcnb.run("cancel", job_id, "--cluster", "testbed")
