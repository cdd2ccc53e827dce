"""Ordinary users with fresh keys, host keys and known_hosts, and the JupyterLab venv the nodes use."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
from pathlib import Path

from .conffiles import TOTP_STEP, write_atomic
from .proc import sh
from .topology import (
    CLIENT,
    ETC,
    HOSTKEYS,
    HOSTS,
    KNOWN_HOSTS,
    OATH_USERS,
    TOTP_SECRETS,
    USERS,
    VENV,
    WHEELS,
    Host,
    key_names,
)


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
        write_atomic(auth, key.with_suffix(".pub").read_text(), 0o600)
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
        lines.append(f"{','.join(key_names(host))} {kind} {blob}\n")
    # The laptop side's known_hosts: the tests never turn host-key checking off.
    write_atomic(KNOWN_HOSTS, "".join(lines))


def ensure_totp() -> None:
    """A TOTP secret per user: pam_oath's users file (root only) and the laptop side's copy.

    Kept when present: pam_oath records the last accepted step in its file (replay protection).
    """
    TOTP_SECRETS.mkdir(mode=0o700, parents=True, exist_ok=True)
    ETC.mkdir(parents=True, exist_ok=True)
    known = OATH_USERS.read_text() if OATH_USERS.exists() else ""
    lines = known.splitlines(keepends=True)
    for user in USERS:
        mine = TOTP_SECRETS / user
        if not mine.exists():
            mine.write_text(secrets.token_hex(20) + "\n")
            mine.chmod(0o600)
        secret = mine.read_text().strip()
        kind = f"HOTP/T{TOTP_STEP}/6"
        lines = [line for line in lines
                 if line.split()[1:2] != [user] or (line.startswith(kind) and secret in line)]
        if not any(line.split()[1:2] == [user] for line in lines):
            lines.append(f"{kind}\t{user}\t-\t{secret}\n")
            (TOTP_SECRETS / f"{user}.last").unlink(missing_ok=True)  # a new line starts afresh
    text = "".join(lines)
    if text != known:
        write_atomic(OATH_USERS, text, 0o600)
    OATH_USERS.chmod(0o600)


def ensure_wheels() -> None:
    """JupyterLab and what it needs as wheels in WHEELS (the venv's pip, so they fit the hosts'
    Python), once: a local index for `hpcnb jupyter install --pip-option=--no-index ...`."""
    done = WHEELS / ".complete"
    if done.exists():
        return
    WHEELS.mkdir(parents=True, exist_ok=True)
    sh([str(VENV / "bin" / "pip"), "download", "-q", "--disable-pip-version-check", "-d", str(WHEELS),
        "jupyterlab>=4", "jupyter_server>=2", "pip"], timeout=900)
    sh(["chmod", "-R", "a+rX", str(WHEELS)])
    done.touch()


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
