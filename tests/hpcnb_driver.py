"""Driving the real `hpcnb` command from tests, and talking to the notebook through its tunnel.

The tests run hpcnb as a user would (a subprocess of `python -m hpcnb`), and reach Jupyter only
through the URL hpcnb prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse

URL_RE = re.compile(r"^http://127\.0\.0\.1:(\d+)/(?:lab\?token=\S+|[^?\s]*)$")  # Jupyter's, or an app's


class Hpcnb:
    """`python -m hpcnb` with a private state dir and the given config file."""

    def __init__(self, state_dir: Path, config: Path | None = None, home: Path | None = None):
        self.env = {**os.environ, "HPCNB_STATE_DIR": str(state_dir), "NO_COLOR": "1"}
        for inherited in ("HPCNB_CLUSTER", "HPCNB_CONFIG", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
            self.env.pop(inherited, None)
        if config is not None:
            self.env["HPCNB_CONFIG"] = str(config)
        if home is not None:
            self.env["HOME"] = str(home)

    def run(self, *args: str, timeout: float = 240, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "hpcnb", *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"hpcnb {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def submit(self, cluster: str, *extra: str) -> str:
        proc = self.run("submit", "--cluster", cluster, "--no-browser", "--no-attach", *extra, check=True)
        job_id = proc.stdout.strip().splitlines()[-1]
        assert job_id, proc.stderr
        return job_id

    def list_json(self, cluster: str, *extra: str) -> list[dict]:
        return json.loads(self.run("list", "--cluster", cluster, "--json", *extra, check=True).stdout)

    def row(self, cluster: str, job_id: str, *extra: str) -> dict:
        """The job's row of `list --json` (exactly one)."""
        [found] = [r for r in self.list_json(cluster, *extra) if r["job_id"] == job_id]
        return found

    def attach(self, job_id: str, cluster: str, *extra: str) -> Attached:
        return Attached(self, job_id, cluster, extra)


class Attached:
    """`hpcnb attach` running in the background; the URL it printed; SIGINT to detach."""

    def __init__(self, hpcnb: Hpcnb, job_id: str, cluster: str, extra: tuple[str, ...]):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpcnb", "attach", job_id, "--cluster", cluster, "--no-browser", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=hpcnb.env,
            stdin=subprocess.DEVNULL)
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.url = self._read_url(timeout=120)
        match = URL_RE.match(self.url)
        assert match, f"not a tunnel URL: {self.url!r}"
        self.port = int(match.group(1))
        self.token = parse_qs(urlparse(self.url).query).get("token", [""])[0]  # "": a password app
        self.base = f"http://127.0.0.1:{self.port}"

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def _read_url(self, timeout: float) -> str:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not result or not result[0].strip():
            self.proc.kill()
            raise AssertionError(f"attach printed no URL; stderr:\n{''.join(self.stderr_lines)}")
        return result[0].strip()

    def next_url(self, timeout: float) -> str:
        """The next URL attach prints (after a requeue: the new run's); it becomes this one's."""
        self.url = self._read_url(timeout)
        match = URL_RE.match(self.url)
        assert match, f"not a tunnel URL: {self.url!r}"
        self.port = int(match.group(1))
        self.token = parse_qs(urlparse(self.url).query).get("token", [""])[0]
        self.base = f"http://127.0.0.1:{self.port}"
        return self.url

    def detach(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def password(self) -> str:
        """What attach said an app's login page wants ("<app> password: X", on stderr)."""
        deadline = time.monotonic() + 10  # stderr is read by another thread
        while True:
            found = [line.split(" password: ", 1)[1].strip() for line in self.stderr_lines
                     if " password: " in line]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert found, f"attach said no password; stderr:\n{self.stderr()}"
        return found[0]

    def __enter__(self) -> Attached:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.detach()

    # --- the notebook, through the tunnel --------------------------------------------------------

    def http(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    def start_kernel(self) -> str:
        status, kernel = self.http("POST", "/api/kernels", {"name": "python3"})
        assert status == 201, kernel
        return kernel["id"]

    def execute(self, kernel_id: str, code: str, timeout: float = 60) -> str:
        """Run code in the kernel over its websocket; the text/plain result (or the stream output)."""
        import websocket

        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels",
            header=[f"Authorization: token {self.token}"], timeout=timeout)
        try:
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps({
                "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                           "msg_type": "execute_request", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": code, "silent": False, "store_history": True,
                            "user_expressions": {}, "allow_stdin": False},
            }))
            deadline = time.monotonic() + timeout
            output = ""
            while time.monotonic() < deadline:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "execute_result":
                    return msg["content"]["data"]["text/plain"]
                if kind == "stream":
                    output += msg["content"]["text"]
                if kind == "error":
                    content = msg["content"]
                    raise AssertionError(f"kernel error: {content['ename']}: {content['evalue']}")
                if kind == "status" and msg["content"]["execution_state"] == "idle":
                    return output
            raise AssertionError(f"no result for {code!r} within {timeout} s")
        finally:
            ws.close()


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table (apps = { code-server = { setup = [...] } })
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def derived_config(path: Path, base: Path, clusters: dict[str, tuple[str, dict]]) -> Path:
    """Write a config file whose clusters copy clusters of `base` with some keys changed.

    clusters: {new name: (base cluster name, {key: value or None to drop})}
    """
    import tomllib

    doc = tomllib.loads(base.read_text())
    lines = []
    for name, (source, changes) in clusters.items():
        table = {**doc["clusters"][source], **changes}
        lines.append(f"[clusters.{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class Background:
    """An hpcnb command running in the background; its stderr collected line by line."""

    def __init__(self, hpcnb: Hpcnb, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "hpcnb", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=hpcnb.env,
                                     stdin=subprocess.DEVNULL)
        self.err: list[str] = []
        self.out: list[str] = []
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.err), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.out), daemon=True).start()

    @staticmethod
    def _drain(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            if exited:
                time.sleep(0.3)  # let the reader threads take the last lines
            for line in list(self.err + self.out):
                match = re.search(pattern, line)
                if match:
                    return match
            if exited or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout} s; stderr:\n{self.stderr()}")
            time.sleep(0.2)

    def stderr(self) -> str:
        return "".join(self.err)

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        time.sleep(0.2)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def walltime_warning_then_end(hpcnb: Hpcnb, cluster: str) -> str:
    """`submit --time 00:01:00`, attached: the URL, the walltime warning, then the end (exit 9,
    "has ended") when the scheduler kills the job at its limit. The job id."""
    submit = Background(hpcnb, "submit", "--cluster", cluster, "--no-browser", "--time", "00:01:00")
    try:
        job_id = submit.wait_for(r"submitted job (\S+)", 60).group(1)
        submit.wait_for(r"^http://127\.0\.0\.1:\d+/lab\?token=", 90)
        submit.wait_for(r"reaches its time limit", 30)
        assert submit.finish(180) == 9, submit.stderr()
        assert f"job {job_id} has ended" in submit.stderr()
    finally:
        submit.stop()
    return job_id


def keepers_folder() -> Path:
    """Where this test run's keepers listen (tests/conftest.py sets it for every hpcnb it starts)."""
    return Path(os.environ["HPCNB_RUNTIME_DIR"])


def keeper_pids(folder: Path) -> list[int]:
    """The pids of the keepers (hpcnb.keeper) whose endpoints are in `folder`, as they recorded them."""
    pids = []
    for info in folder.glob("*.json"):
        try:
            pids.append(int(json.loads(info.read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            continue
    return pids


def keeper_logs(folder: Path | None = None, lines: int = 40) -> str:
    """The last lines of each keeper's log in `folder` (this run's, by default): for a failing
    test's message, which says then why a kept login died."""
    folder = folder or keepers_folder()
    parts = []
    for log in sorted(folder.rglob("*.log")):
        with contextlib.suppress(OSError):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
    return "\n".join(parts)


def stop_keepers(folder: Path, timeout: float = 10.0) -> list[int]:
    """End every keeper (hpcnb.keeper) whose endpoint is in `folder`, and every OpenSSH master
    hpcnb started there (hpcnb.openssh); the keepers' pids it signalled."""
    subprocess.run(["pkill", "-f", f"ControlPath={folder}/"], check=False)
    pids = []
    for pid in keeper_pids(folder):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        pids.append(pid)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return pids


def argvs() -> dict[int, bytes]:
    """Every process on this machine (the testbed's hosts share its pid namespace): pid -> its argv
    as /proc shows it to anyone (NUL-separated). Where a secret must never be."""
    out = {}
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # ended meanwhile
            out[int(path.parent.name)] = path.read_bytes()
    return out
