"""A real OpenSSH sshd on 127.0.0.1 for the integration tests (needs root: it adds a user).

The daemon gets its own temp dir: host keys, sshd_config, AuthorizedKeysFile, and a throwaway
ordinary user `hpcnb-sshtest` whose home is in that dir; all removed on teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
USER = "hpcnb-sshtest"
FEW_SESSIONS_ADDR, FEW_SESSIONS = "127.0.0.3", 3  # MaxSessions for connections to this address


def require(condition: bool, why: str) -> None:
    """Skip when a prerequisite is missing; under CI=true it is a failure instead."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"integration prerequisite missing under CI: {why}")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def openssh_fingerprint(pub: Path) -> str:
    """The fingerprint as `ssh-keygen -l` prints it, to check ours against OpenSSH's."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


@dataclass
class Sshd:
    base: Path
    port: int
    home: Path
    host_key: Path  # private host key; .pub beside it
    client_key: Path  # authorized
    other_key: Path  # not authorized
    proc: subprocess.Popen[bytes]
    user: str = USER

    @property
    def host_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    def known_hosts(self, name: str | None = None, pub: Path | None = None) -> Path:
        """A fresh known_hosts file listing this server's key (or `pub`) under `name`."""
        kind, blob = (pub or self.host_key.with_suffix(".pub")).read_text().split()[:2]
        path = Path(tempfile.mkstemp(dir=self.base, prefix="known_hosts-")[1])
        path.write_text(f"{name or self.host_name} {kind} {blob}\n")
        return path

    def empty_known_hosts(self) -> Path:
        return Path(tempfile.mkstemp(dir=self.base, prefix="known_hosts-")[1])

    def connection_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listening daemon)."""
        return _children(self.proc.pid)

    def kill_connections(self) -> list[int]:
        """SIGKILL every connection: the [priv] monitor and its unprivileged child (which owns
        the socket) alike, like a crashed login node would."""
        pids = _descendants(self.proc.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def log(self) -> str:
        return (self.base / "sshd.log").read_text(errors="replace")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def _remove_user() -> None:
    subprocess.run(["userdel", "-f", USER], capture_output=True)


def _config(base: Path, port: int, host_key: Path) -> str:
    return f"""\
Port {port}
ListenAddress 127.0.0.1
ListenAddress 127.0.0.2
ListenAddress {FEW_SESSIONS_ADDR}
HostKey {host_key}
PidFile {base}/sshd.pid
AuthorizedKeysFile {base}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin no
AllowUsers {USER}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
Subsystem sftp internal-sftp
MaxStartups 200:30:400
MaxSessions 200
LogLevel VERBOSE

# The same server with a small session limit, for the tests of waiting for a session.
Match LocalAddress {FEW_SESSIONS_ADDR}
    MaxSessions {FEW_SESSIONS}
"""


@contextlib.contextmanager
def running_sshd() -> Iterator[Sshd]:
    require(hasattr(os, "geteuid") and os.geteuid() == 0, "needs root (runs sshd, adds a user)")
    require(Path(SSHD).exists(), f"{SSHD} missing (apt-get install openssh-server)")
    for tool in ("ssh-keygen", "useradd", "userdel", "pgrep"):
        require(shutil.which(tool) is not None, f"{tool} missing")
    base = Path(tempfile.mkdtemp(prefix="hpcnb-sshd-"))
    base.chmod(0o755)  # the test user must traverse to its home and to the unix sockets
    home = base / "home"
    proc: subprocess.Popen[bytes] | None = None
    try:
        _remove_user()  # a leftover from a killed run
        # password "*": no password login, but not "!"-locked (sshd refuses locked accounts)
        subprocess.run(
            ["useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-p", "*", USER],
            check=True,
            capture_output=True,
        )
        home.mkdir(mode=0o755)
        shutil.chown(home, USER, USER)
        host_key = keygen(base / "host_ed25519")
        client_key = keygen(base / "client_ed25519")
        other_key = keygen(base / "other_ed25519")
        (base / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
        (base / "authorized_keys").chmod(0o644)
        port = free_port()
        config = base / "sshd_config"
        config.write_text(_config(base, port, host_key))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
        with open(base / "sshd.log", "wb") as log:
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sshd did not start: " + (base / "sshd.log").read_text())
            time.sleep(0.05)
        yield Sshd(base, port, home, host_key, client_key, other_key, proc)
    finally:
        if proc is not None:
            for pid in _descendants(proc.pid):  # sshd leaves its connections running on SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()
        _remove_user()
        shutil.rmtree(base, ignore_errors=True)
