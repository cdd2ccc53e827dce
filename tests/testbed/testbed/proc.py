"""Running commands and daemons for the testbed; pid files so `down` stops exactly what `up` started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .topology import LOG, PIDS, Host, netns_path


class TestbedError(RuntimeError):
    pass


def sh(argv: Sequence[str], *, check: bool = True, env: dict[str, str] | None = None,
       input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, input=input,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise TestbedError(f"`{' '.join(argv)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def in_host(host: Host, argv: Sequence[str]) -> list[str]:
    """argv run in the host's network namespace with the host's own hostname (a new UTS namespace).

    nsenter --net, not `ip netns exec`: the latter remounts /sys, and slurmd 22.05 then dies with
    "No filesystem mounted on /sys/fs/cgroup" (TESTBED-NOTES.md).
    """
    return ["nsenter", f"--net={netns_path(host)}", "unshare", "--uts", "sh", "-c",
            f'hostname {host.name} && exec "$@"', "sh", *argv]


def in_host_etc(host: Host, argv: Sequence[str]) -> list[str]:
    """As in_host, but through `ip netns exec`, which also bind-mounts /etc/netns/NAME/hosts over
    /etc/hosts: sshd and its sessions, and OpenPBS, which refuses a host name that does not resolve
    to the host's own non-loopback address (../shared/openpbs/README.md, pitfall 1)."""
    return ["ip", "netns", "exec", host.name, "unshare", "--uts", "sh", "-c",
            f'hostname {host.name} && exec "$@"', "sh", *argv]


def pid_file(name: str) -> Path:
    return PIDS / f"{name}.pid"


def read_pid(name: str) -> int | None:
    try:
        pid = int(pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie of ours still answers kill(0); reap it if it is our child.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        done = 0
    if done:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def start_daemon(name: str, argv: Sequence[str], *, env: dict[str, str] | None = None) -> int:
    """Start a foreground daemon detached from us; record its pid. Idempotent."""
    existing = read_pid(name)
    if existing:
        return existing
    LOG.mkdir(parents=True, exist_ok=True)
    PIDS.mkdir(parents=True, exist_ok=True)
    with open(LOG / f"{name}.out", "ab") as out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, env=env)
    pid_file(name).write_text(f"{proc.pid}\n")
    return proc.pid


def stop_pid(pid: int, *, grace: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)


def wait_for(what: str, check, *, timeout: float = 30.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TestbedError(f"timed out after {timeout:.0f} s waiting for {what} (logs: {LOG})")
