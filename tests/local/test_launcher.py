"""Run the real local job script (templates/local.sh.j2 + launcher.py) against this machine's Jupyter.

Everything stays on loopback (or a unix socket): HOME is a temp dir, HPCNB_JOB_ID is set as
hpcnb.localjob would set it, and the script is stopped with SIGTERM as a scheduler would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hpcnb_driver import argvs

from hpcnb.config import load_cluster
from hpcnb.render import render_script
from hpcnb.request import build_request

pytest.importorskip("jupyterlab")
START_TIMEOUT_S = 120


def _load_launcher():
    """templates/launcher.py (run on the node as a script) imported, for its UnixHTTPConnection."""
    import importlib.util

    from hpcnb.paths import template_dir

    spec = importlib.util.spec_from_file_location("hpcnb_launcher", template_dir() / "launcher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


UnixHTTPConnection = _load_launcher().UnixHTTPConnection


@dataclasses.dataclass
class Job:
    proc: subprocess.Popen[bytes]
    session: Path
    script: str

    def wait_for(self, name: str, timeout: float = START_TIMEOUT_S) -> dict:  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            path = self.session / name
            if path.exists():
                return json.loads(path.read_text())
            if name != "ended" and (self.session / "ended").exists():
                pytest.fail(f"job ended before {name}:\n{self.log()}")
            time.sleep(0.2)
        pytest.fail(f"no {name} after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.session / "job.log").read_text()
        except FileNotFoundError:
            return "(no job.log)"


@contextlib.contextmanager
def run_job(tmp_path: Path, tunnel: str, job_id: str, **request: object) -> Iterator[Job]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    cfg = dataclasses.replace(
        load_cluster("local"), tunnel=tunnel, python=sys.executable, start_timeout=START_TIMEOUT_S
    )
    script = render_script(cfg, build_request(cfg, **request), "local")  # type: ignore[arg-type]
    (tmp_path / "job.sh").write_text(script)
    env = {
        **os.environ,
        "HOME": str(home),
        "HPCNB_JOB_ID": job_id,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HPCNB_BIND_HOST": "127.0.0.1",  # `direct` binds the node's address; here: loopback
        "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
    }
    proc = subprocess.Popen(["bash", str(tmp_path / "job.sh")], env=env, start_new_session=True)
    job = Job(proc, home / ".hpcnb" / "sessions" / "local" / job_id, script)
    try:
        yield job
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def get_status(conn: http.client.HTTPConnection, token: str | None) -> int:
    headers = {"Authorization": f"token {token}"} if token else {}
    conn.request("GET", "/api/status", headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("tunnel", ["node-ssh", "socket", "direct"])
def test_launcher_start_handshake_stop(tmp_path: Path, tunnel: str) -> None:
    with run_job(tmp_path, tunnel, "test1", hours=1) as job:
        info = job.wait_for("connection.json")
        token = info["token"]
        assert info["version"] == 1 and info["job_id"] == "test1" and info["tunnel"] == tunnel
        assert info["base_url"] == "/" and info["walltime_end"] > info["started"] - 5
        assert len(token) == 48 and token not in job.script
        assert (job.session / "token").read_text().strip() == token

        if tunnel == "socket":
            assert info["host"] is None and info["port"] is None
            sock = Path(info["socket"])
            assert stat.S_ISSOCK(sock.lstat().st_mode) and mode(sock) == 0o600
            def make() -> http.client.HTTPConnection:
                conn = UnixHTTPConnection(str(sock))
                conn.timeout = 10  # the launcher's own probe uses 2 s; a loaded test machine wants more
                return conn
        else:
            assert info["host"] == "127.0.0.1" and info["socket"] is None
            make = lambda: http.client.HTTPConnection("127.0.0.1", info["port"], timeout=10)  # noqa: E731
        assert get_status(make(), token) == 200
        assert get_status(make(), None) in (401, 403)

        assert mode(job.session) == 0o700
        assert mode(job.session.parent) == 0o700
        for name in ("connection.json", "token", "job.log"):
            assert mode(job.session / name) == 0o600, name
        assert not any(token.encode() in c for c in argvs().values())
        assert token not in job.log()

        jupyter_pid = info["pid"]
        assert alive(jupyter_pid)
        job.proc.send_signal(signal.SIGTERM)  # bash exec'd the launcher: this is what scancel does
        ended = job.wait_for("ended", timeout=40)
        assert ended["signal"] == "SIGTERM" and isinstance(ended["exit_code"], int)
        assert mode(job.session / "ended") == 0o600
        job.proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while alive(jupyter_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(jupyter_pid), "Jupyter still running after the job ended"
        if tunnel == "socket":
            assert not Path(info["socket"]).exists()


def test_missing_notebook_dir_ends_fast_with_reason(tmp_path: Path) -> None:
    with run_job(tmp_path, "node-ssh", "test2", notebook_dir="~/does-not-exist") as job:
        ended = job.wait_for("ended", timeout=30)
        assert ended["exit_code"] == 2 and "does-not-exist" in ended["reason"]
        assert job.proc.wait(timeout=30) == 2
        assert not (job.session / "connection.json").exists()
        assert "does-not-exist" in job.log()


def test_missing_job_id_is_refused(tmp_path: Path) -> None:
    with run_job(tmp_path, "node-ssh", "") as job:
        assert job.proc.wait(timeout=30) == 71


def test_missing_python_is_reported(tmp_path: Path) -> None:
    cfg = dataclasses.replace(load_cluster("local"), python="no-such-python3")
    script = tmp_path / "job.sh"
    script.write_text(render_script(cfg, build_request(cfg), "local"))
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "HPCNB_JOB_ID": "test3"}
    assert subprocess.run(["bash", str(script)], env=env, timeout=30).returncode == 127
    ended = json.loads((home / ".hpcnb/sessions/local/test3/ended").read_text())
    assert ended["exit_code"] == 127
    assert "no-such-python3" in (home / ".hpcnb/sessions/local/test3/job.log").read_text()
