"""Pytest helpers for the real testbed: bring it up once per session, run commands on its hosts."""

from __future__ import annotations

import os
import shlex
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
# psql and pg_config: OpenPBS's datastore (its pbs_db_env finds PostgreSQL through them).
REQUIRED = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "qsub", "munged", "mariadbd", "ip", "nsenter",
            "psql", "pg_config")


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
             jump: bool = False, port: int = 22) -> list[str]:
    """OpenSSH as the laptop would run it, host keys checked strictly against the testbed's file.
    port topology.PBS_LOGIN_PORT: login1 as the OpenPBS cluster's login node."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={topology.KNOWN_HOSTS}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=5", "-i", str(identity_file(user)), "-p", str(port)]
    if jump:
        # ProxyCommand, not -J: -J does not hand the jump ssh our known_hosts and identity options.
        hop = ssh_argv(topology.LOGIN.addr, user)
        argv += ["-o", "ProxyCommand=" + shlex.join([*hop[:-1], "-W", "%h:%p", hop[-1]])]
    return [*argv, f"{user}@{host}"]


def on_node(node: str, command: str, *, user: str = topology.USERS[0], input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `command` on a compute node (by name) through login1, as the given user."""
    addr = next(n.addr for n in topology.NODES if n.name == node)
    return ssh(command, host=addr, user=user, jump=True, input=input, timeout=timeout)


def ssh(command: str, *, host: str = topology.LOGIN.addr, user: str = topology.USERS[0],
        jump: bool = False, input: str | None = None, timeout: float = 60,
        port: int = 22) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ssh_argv(host, user, jump, port), command], capture_output=True,
                          text=True, input=input, timeout=timeout)


# --- the gateway (ProxyJump, TOTP) ---------------------------------------------------------------
TOTP_ASKPASS = HERE / "testbed" / "totp.py"


def ssh_config_copy(tmp_path: Path, known_hosts: Path | None = None) -> Path:
    """The testbed's client ssh_config, optionally with another known_hosts file."""
    text = topology.SSH_CONFIG.read_text()
    if known_hosts is not None:
        text = text.replace(str(topology.KNOWN_HOSTS), str(known_hosts))
    path = tmp_path / "ssh_config"
    path.write_text(text)
    return path


def gateway_env(tmp_path: Path, ssh_config: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for `python -m hpcnb` through the gateway: ssh config, TOTP askpass, prompt log."""
    return {"HPCNB_SSH_CONFIG": str(ssh_config or topology.SSH_CONFIG),
            "HPCNB_ASKPASS": str(TOTP_ASKPASS), "HPCNB_TB_PROMPT_LOG": str(tmp_path / "prompts.log"),
            **extra}


def prompts(tmp_path: Path) -> list[str]:
    log = tmp_path / "prompts.log"
    return log.read_text().splitlines() if log.exists() else []


def seed_session(state_dir: Path, cluster: str, job_id: str = "999999") -> None:
    """A running session in hpcnb's local store, so `hpcnb list` asks the cluster about it."""
    import time

    from hpcnb.store import SessionRecord, Store

    now = time.time()
    with Store(state_dir / "sessions.db") as store:
        store.add(SessionRecord(cluster=cluster, job_id=job_id, name="hpcnb", scheduler="slurm",
                                partition="debug", tunnel="direct", submitted_at=now, state="running",
                                node="node01", time_left_s=3600, updated_at=now))


def host_fingerprint(host: topology.Host) -> str:
    from testbed.accounts import host_key

    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(host_key(host).with_suffix(".pub"))],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def sshd_pids_serving(pids: list[int], host: topology.Host = topology.LOGIN,
                      laptop_addr: str = topology.LAPTOP_ADDR) -> list[int]:
    """The sshd processes in `host`'s namespace serving the SSH connections of laptop processes
    `pids` (an hpcnb command, or its keeper)."""
    import re

    out = subprocess.run(["ss", "-tnpH", "state", "established", "dst", f"{host.addr}:22"],
                         capture_output=True, text=True).stdout
    ports = [line.split()[2].rsplit(":", 1)[1] for line in out.splitlines()
             if any(f"pid={pid}," in line for pid in pids)]
    assert ports, f"processes {pids} have no SSH connection to {host.name}:\n{out}"
    found: list[int] = []
    for port in ports:
        inside = subprocess.run(
            ["ip", "netns", "exec", host.name, "ss", "-tnpH", "state", "established",
             "dst", f"{laptop_addr}:{port}"], capture_output=True, text=True).stdout
        found += [int(p) for p in re.findall(r"pid=(\d+)", inside)]
    assert found, f"no sshd found in {host.name} for the connection"
    return sorted(set(found))


def admin_scontrol(*args: str) -> None:
    """scontrol as Slurm's administrator, in login1's namespace (requeue, a node down)."""
    from testbed.proc import in_host

    proc = subprocess.run(in_host(topology.LOGIN, ["scontrol", *args]), capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SLURM_CONF": str(topology.SLURM_CONF)})
    assert proc.returncode == 0, proc.stderr
