"""Ordinary users with fresh keys, host keys and known_hosts, and the JupyterLab venv the nodes use."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from .proc import sh
from .topology import CLIENT, HOSTKEYS, HOSTS, KNOWN_HOSTS, USERS, VENV, Host


def ensure_users() -> None:
    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            sh(["useradd", "--create-home", "--shell", "/bin/bash", user])
        # No password, but not "locked" ("!"): sshd refuses even key logins to locked accounts.
        sh(["usermod", "-p", "*", user])
        home = Path(pwd.getpwnam(user).pw_dir)
        home.chmod(0o750)


def identity_file(user: str) -> Path:
    return CLIENT / f"id_ed25519_{user}"


def ensure_client_keys() -> None:
    """A key per user on the laptop side; its public half authorised in the user's shared home."""
    CLIENT.mkdir(parents=True, exist_ok=True)
    CLIENT.chmod(0o700)
    for user in USERS:
        key = identity_file(user)
        if not key.exists():
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{user}@hpcnb-testbed",
                "-f", str(key)])
        entry = pwd.getpwnam(user)
        ssh_dir = Path(entry.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        auth = ssh_dir / "authorized_keys"
        auth.write_text(key.with_suffix(".pub").read_text())
        auth.chmod(0o600)
        for path in (ssh_dir, auth):
            os.chown(path, entry.pw_uid, entry.pw_gid)


def host_key(host: Host) -> Path:
    return HOSTKEYS / host.name / "ssh_host_ed25519_key"


def ensure_host_keys() -> None:
    lines = []
    for host in HOSTS:
        key = host_key(host)
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(key)])
        kind, blob = key.with_suffix(".pub").read_text().split()[:2]
        lines.append(f"{host.name},{host.addr} {kind} {blob}\n")
    # The laptop side's known_hosts: the tests never turn host-key checking off.
    KNOWN_HOSTS.write_text("".join(lines))


def venv_ready() -> bool:
    return (VENV / "bin" / "jupyter-lab").exists()


def ensure_venv() -> None:
    """JupyterLab in a venv every host can read, as a cluster's module or conda env would be."""
    if venv_ready():
        return
    python = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    if VENV.exists():
        shutil.rmtree(VENV)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    sh([python, "-m", "venv", str(VENV)])
    sh([str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "jupyterlab"],
       timeout=900)
    sh(["chmod", "-R", "a+rX", str(VENV.parent)])
