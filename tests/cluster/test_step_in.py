"""`hpcnb ssh` through the scheduler (node_access = "scheduler", for sites without SSH to compute
nodes): Slurm's `srun --jobid --overlap` over hpcnb's own login, for the keeper, a plain paramiko
login and the OpenSSH backend. A command's output, exit status and stdin; an interactive shell on
a real pty here: its terminal, the window size and a change of it, Ctrl-C; and a scheduler that
cannot step in, refused in one line."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
from hpcnb_driver import Hpcnb, derived_config

pytestmark = pytest.mark.cluster

CLUSTERS = {"step-kept": ("testbed", {}), "step-plain": ("testbed", {"persist": "no"}),
            "step-openssh": ("testbed-openssh", {}), "step-pbs": ("testbed-openpbs", {})}


@pytest.fixture
def hpcnb(testbed, tmp_path) -> Hpcnb:
    config = derived_config(tmp_path / "config.toml", testbed, {
        name: (base, {**changes, "node_access": "scheduler"}) for name, (base, changes) in CLUSTERS.items()})
    return Hpcnb(tmp_path / "state", config=config, home=tmp_path)


@pytest.mark.parametrize("cluster", ["step-kept", "step-plain", "step-openssh"])
def test_a_command_steps_into_the_job(hpcnb, job, cluster):
    job_id = job(cluster)
    proc = hpcnb.run("ssh", job_id, "--cluster", cluster, "--", "hostname; echo step=$SLURM_STEP_ID")
    assert proc.returncode == 0, proc.stderr
    name, step = proc.stdout.split()
    assert name == hpcnb.row(cluster, job_id)["node"] and step.startswith("step=")
    assert hpcnb.run("ssh", job_id, "--cluster", cluster, "--", "exit 7").returncode == 7
    argv = [sys.executable, "-m", "hpcnb", "ssh", job_id, "--cluster", cluster, "--", "tr a-z A-Z"]
    cat = subprocess.run(argv, input="through stdin\n", capture_output=True, text=True, env=hpcnb.env,
                         timeout=120)
    assert (cat.returncode, cat.stdout) == (0, "THROUGH STDIN\n"), cat.stderr


class Terminal:
    """`hpcnb ssh JOB` on a pseudo-terminal of this test, as a user's terminal emulator runs it."""

    def __init__(self, hpcnb: Hpcnb, job_id: str, cluster: str, rows: int, cols: int) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: hpcnb on the pty's slave side
            os.execve(sys.executable, [sys.executable, "-m", "hpcnb", "ssh", job_id, "--cluster", cluster],
                      hpcnb.env)
        self.resize(rows, cols)
        self.seen = b""

    def resize(self, rows: int, cols: int) -> None:
        # The kernel sends SIGWINCH to the pty's foreground process group, as a terminal window does.
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, needle: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while needle.encode() not in self.seen:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {needle!r} within {timeout} s; the terminal shows:\n{self.seen!r}")
            try:
                self.seen += os.read(self.fd, 65536)
            except OSError:  # the child ended and closed the pty
                raise AssertionError(f"the terminal closed before {needle!r}:\n{self.seen!r}") from None
        return self.seen.decode(errors="replace")

    def status(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                self.seen += os.read(self.fd, 65536)
            except OSError:
                time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"hpcnb ssh did not end; the terminal shows:\n{self.seen!r}")


@pytest.mark.parametrize("cluster", ["step-kept", "step-plain", "step-openssh"])
def test_an_interactive_shell_has_a_terminal_of_this_size_and_ctrl_c(hpcnb, job, cluster):
    job_id = job(cluster)
    term = Terminal(hpcnb, job_id, cluster, rows=31, cols=97)
    term.expect("$ ")  # the shell's prompt: typing before it starts is lost, as with srun by hand
    term.send("stty size; tty; echo at=$(hostname)\n")
    term.expect("31 97")
    term.expect("/dev/pts/")
    term.expect(f"at={hpcnb.row(cluster, job_id)['node']}")
    term.resize(40, 120)
    time.sleep(1)  # the new size travels to the far pty
    term.send("stty size\n")
    term.expect("40 120")
    term.send("sleep 60; echo not-interrupted\n")
    time.sleep(2)
    started = time.monotonic()
    term.send("\x03")  # Ctrl-C: the far pty's SIGINT ends the sleep, not hpcnb
    term.send("echo after-$((6*7))\n")
    term.expect("after-42", timeout=30)
    assert time.monotonic() - started < 30 and b"\nnot-interrupted" not in term.seen  # (its echo is)
    term.send("exit 3\n")
    assert term.status() == 3


def test_a_scheduler_that_cannot_step_in_says_so_in_one_line(hpcnb, job):
    job_id = job("step-pbs")
    proc = hpcnb.run("ssh", job_id, "--cluster", "step-pbs", "--", "hostname")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "pbs cannot step into a running job" in lines[0] and "pbs_attach" in lines[0], proc.stderr
    code = hpcnb.run("code", job_id, "--cluster", "step-pbs", "--yes")
    assert code.returncode == 2 and "node_access" in code.stderr
