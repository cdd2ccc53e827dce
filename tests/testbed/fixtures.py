"""Pytest helpers for the real testbed: bring it up once per session, run commands on its hosts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from testbed import topology  # noqa: E402
from testbed.accounts import identity_file  # noqa: E402

CLUSTER_CMD = HERE / "cluster"
HPCNB_TOML = HERE / "hpcnb.toml"
REQUIRED = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "qsub", "munged", "mariadbd", "ip", "nsenter")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_prerequisites() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [cmd for cmd in REQUIRED if not shutil.which(cmd, path=path)]
    if not Path("/usr/sbin/sshd").exists():
        missing.append("sshd")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def ensure_up() -> None:
    missing = missing_prerequisites()
    if missing:
        message = f"the testbed needs {', '.join(missing)}"
        if in_ci():
            pytest.fail(message + " (CI=true: a skipped cluster test is a failure)")
        pytest.skip(message)
    proc = subprocess.run([str(CLUSTER_CMD), "up"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"testbed up failed: {proc.stdout}{proc.stderr}")


def ssh_argv(host: str = topology.LOGIN.addr, user: str = topology.USERS[0],
             jump: bool = False) -> list[str]:
    """OpenSSH as the laptop would run it, host keys checked strictly against the testbed's file."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={topology.KNOWN_HOSTS}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=5", "-i", str(identity_file(user))]
    if jump:
        argv += ["-J", f"{user}@{topology.LOGIN.addr}"]
    return [*argv, f"{user}@{host}"]


def ssh(command: str, *, host: str = topology.LOGIN.addr, user: str = topology.USERS[0],
        jump: bool = False, input: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ssh_argv(host, user, jump), command], capture_output=True, text=True,
                          input=input, timeout=timeout)
