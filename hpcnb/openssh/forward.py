"""A notebook tunnel with the system `ssh`: `ssh -O forward` on the master for the direct mode
(the master forwards, as a keeper does: no process of hpcnb's carries the bytes), or an `ssh -N`
of its own for the node hop (node-ssh, socket: OpenSSH forwards to a unix socket natively) and
where there is no master (Windows). Both listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import tempfile
import time
from typing import Any

from hpcnb.errors import TunnelError
from hpcnb.openssh import options as o

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def proxy_command(remote: Any) -> str:
    """ssh_config ProxyCommand (run by ssh through the user's shell): the login host's master
    carries the node hop (-W). Every word shell-quoted; `%` doubled, so only %h/%p are tokens."""
    words = [remote.ssh, *remote.options, "-W", "%h:%p", "--", remote.host]
    quoted = [w if w == "%h:%p" else shlex.quote(w).replace("%", "%%") for w in words]
    return " ".join(quoted)


class MasterForward:
    """`ssh -O forward -L`: the master listens; `ssh -O cancel` ends it."""

    def __init__(self, remote: Any, spec: str, port: int) -> None:
        self.remote, self.spec, self.port = remote, spec, port

    def _ctl(self, op: str) -> subprocess.CompletedProcess[str]:
        r = self.remote
        try:
            return subprocess.run([r.ssh, "-O", op, "-L", self.spec, *r.options, "--", r.host],
                                  capture_output=True, text=True, timeout=30, check=False,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TunnelError(f"ssh -O {op} -L {self.spec} failed: {exc}") from exc

    def start(self) -> MasterForward:
        proc = self._ctl("forward")
        if proc.returncode != 0:
            raise TunnelError(f"ssh -O forward -L {self.spec} failed: {proc.stderr.strip()[-200:]}")
        return self

    def alive(self) -> bool:
        return True  # the master's own life is the remote's concern (its next command says)

    def stop(self) -> None:
        with contextlib.suppress(TunnelError):
            self._ctl("cancel")


class ProcessForward:
    """`ssh -N -L` of its own (through the master to the node, or a login of its own)."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str]) -> None:
        self.port = port
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._err, env=env)

    def wait_listening(self) -> ProcessForward:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._err.seek(0)
                stderr = self._err.read().decode(errors="replace")
                if self.proc.returncode == 255:
                    raise o.classify(stderr, "the node")
                raise TunnelError(f"ssh for the tunnel exited {self.proc.returncode}: "
                                  f"{stderr.strip()[-200:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return self
            time.sleep(0.1)
        self.stop()
        raise TunnelError(f"ssh did not listen on 127.0.0.1:{self.port} in {READY_TIMEOUT_S:g} s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._err.close()


def open_forward(remote: Any, target: dict[str, Any], port: int) -> MasterForward | ProcessForward:
    """127.0.0.1:port (0: a free one) -> the notebook, per the handshake's tunnel mode."""
    if port and _port_taken(port):
        raise TunnelError(f"local port {port} is already in use",
                          hint="pick another with --port, or leave it out for a free one")
    port = port or free_port()
    mode = target["mode"]
    if mode == "direct":
        spec = f"127.0.0.1:{port}:{target['host']}:{target['port']}"
        if remote.control.kind != "none":
            return MasterForward(remote, spec, port).start()
        argv = [remote.ssh, *remote.options, "-N", "-o", "ExitOnForwardFailure=yes", "-L", spec,
                "--", remote.host]
        return ProcessForward(argv, port, remote._env()).wait_listening()
    far = target["socket"] if mode == "socket" else f"127.0.0.1:{target['port']}"
    node = str(target["node"])
    # The node: reached from the login host by the name the scheduler gave (-W resolves it there),
    # its host key checked under that name; keys only (the node trusts the user's key).
    argv = [remote.ssh, *remote.node_options, "-N", "-o", "ExitOnForwardFailure=yes",
            "-o", f"ProxyCommand={proxy_command(remote)}", "-o", "BatchMode=yes",
            "-L", f"127.0.0.1:{port}:{far}", "--", node]
    return ProcessForward(argv, port, remote._env()).wait_listening()
