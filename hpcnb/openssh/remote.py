"""OpenSSHRemote: the Remote protocol (hpcnb.remote) through the system `ssh` binary.

Each command is one `ssh` process riding a ControlMaster (the user's own when their ssh config has
a live one, else one hpcnb starts in its private folder), so one command makes at most one login
and, within `persist`, later commands none. Prompts (a TOTP code) are ssh's own, on the terminal;
with HPCNB_ASKPASS set, ssh asks that program instead (SSH_ASKPASS_REQUIRE=force, OpenSSH >= 8.4).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcnb.errors import CommandError, SSHError
from hpcnb.openssh import options as o
from hpcnb.prompts import ASKPASS_ENV
from hpcnb.remote import CommandResult, logged, shell_command

_log = logging.getLogger("hpcnb.openssh")
EXIT_SSH = 255  # ssh(1): "exits with 255 if an error occurred" (its own, not the command's)
LOGIN_TIMEOUT_S = 600  # a login with a code to fetch from a phone
_SAID_NO_MASTER: set[str] = set()  # Windows: said once per process


class OpenSSHRemote:
    def __init__(self, cfg: Any, *, accept_new_host_key: bool = False,
                 notify: Any = None, folder: Path | None = None) -> None:
        self.cfg, self.host = cfg, cfg.login_host
        found = shutil.which("ssh")
        if found is None:
            raise SSHError("ssh_backend = \"openssh\" but no `ssh` on PATH",
                           hint="install OpenSSH's client, or use ssh_backend = \"paramiko\"")
        self.ssh = found
        self.effective = o.parse_effective(self._plain([self.ssh, "-G", *self._explicit(), "--",
                                                        self.host]).stdout)
        self.control = self._control(folder)
        config = o.config_file_option(os.environ)
        self.options = config + o.base_options(cfg, self.effective, self.control,
                                               accept_new=accept_new_host_key)
        self.node_options = config + o.base_options(cfg, self.effective, self.control,
                                                    accept_new=accept_new_host_key, node_hop=True)
        self.user = self.effective.get("user", cfg.user or "")
        self.route = f"{self.user}@{self.effective.get('hostname', self.host)} (OpenSSH)"
        self._started_master = False
        if self.control.kind == "none" and self.host not in _SAID_NO_MASTER and notify:
            _SAID_NO_MASTER.add(self.host)
            notify("OpenSSH for Windows has no ControlMaster: each command logs in again")

    # --- which master ------------------------------------------------------------------------
    def _explicit(self) -> list[str]:
        cfg, opts = self.cfg, o.config_file_option(os.environ)
        if cfg.user:
            opts += ["-l", cfg.user]
        if cfg.port:
            opts += ["-p", str(cfg.port)]
        if cfg.identity_file:
            opts += ["-i", cfg.identity_file]
        return opts

    def _control(self, folder: Path | None) -> o.Control:
        if sys.platform == "win32":
            return o.Control("none")
        yours = o.user_control_path(self.effective)
        if yours is not None and self._answers(yours):
            return o.Control("yours", yours)  # their live master: ride it, never start one there
        from hpcnb.keeper import endpoint as ep
        from hpcnb.keeper.client import route_key_of

        where = ep.private_folder(folder or ep.runtime_folder())
        persist = int(self.cfg.persist or 0)
        # Named by the route key the keepers use (host, port, user, identity, known_hosts, the ssh
        # config's text, the state folder), not ssh's %C (host, port, user, jump only): a master is
        # never ridden by a cluster whose host keys or identity differ.
        return o.Control("hpcnb", str(where / f"ssh-{route_key_of(self.cfg)}"), persist)

    def _answers(self, control_path: str) -> bool:
        """Whether a master answers at this ControlPath (`ssh -O check`)."""
        check = self._plain([self.ssh, "-o", f"ControlPath={o.quote_path(control_path)}", "-O", "check",
                             *self._explicit(), "--", self.host])
        return check.returncode == 0

    def describe(self) -> str:
        """For `hpcnb doctor`: the backend, ssh's version, and the master it rides."""
        ver = o.version(self._plain([self.ssh, "-V"]).stderr) or "version unknown"
        if self.control.kind == "none":
            return f"openssh ({ver}): no ControlMaster on Windows, one login per command"
        whose = "your ControlMaster" if self.control.kind == "yours" else "hpcnb's ControlMaster"
        return f"openssh ({ver}): {whose} at {self.control.path}"

    def check_login(self) -> None:
        """Log in now (doctor's SSH check): the master, or one command where there is none."""
        if self.control.kind == "none":
            self.run(["true"])
        else:
            self.ensure_master()

    def master_alive(self) -> bool:
        if self.control.kind == "none":
            return False
        check = self._plain([self.ssh, "-O", "check", *self.options, "--", self.host])
        return check.returncode == 0

    def ensure_master(self) -> None:
        """Log in once (the master), unless a master already answers. Under a lock, so two
        commands starting at once make one login (and one prompt), not two."""
        if self.control.kind == "none" or self.master_alive():
            return
        from hpcnb.keeper import endpoint as ep

        lock = Path(str(self.control.path)).with_name("openssh-master.lock")
        with ep.file_lock(lock):
            if self.master_alive():
                return
            self._start_master()

    def _start_master(self) -> None:
        argv = [self.ssh, *o.master_options(self.control, self.effective), *self.options, "--", self.host]
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=err, env=self._env(), timeout=LOGIN_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                raise SSHError(f"the login to {self.route} did not finish in {LOGIN_TIMEOUT_S} s") from None
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if proc.returncode != 0:
            raise o.classify(stderr, self.route)
        self._started_master = True

    # --- the Remote protocol -----------------------------------------------------------------
    @logged
    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        args = [str(a) for a in argv]
        proc = self._ssh(args, (stdin or "").encode(), timeout)
        return CommandResult(args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                             proc.stderr.decode("utf-8", "replace"))

    def read_file(self, path: str) -> bytes:
        proc = self._ssh(["cat", "--", path], b"", 60.0)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace")
            if "No such file" in err:
                raise FileNotFoundError(2, "No such file", path)
            if "Permission denied" in err:
                raise PermissionError(13, "Permission denied", path)
            raise SSHError(f"cannot read {path} on {self.host}: {err.strip()[-200:]}")
        return proc.stdout

    def _ssh(self, argv: list[str], stdin: bytes, timeout: float) -> subprocess.CompletedProcess[bytes]:
        self.ensure_master()
        full = [self.ssh, *self.options, "-T", "--", self.host, shell_command(argv)]
        try:
            proc = subprocess.run(full, input=stdin, capture_output=True, timeout=timeout,
                                  env=self._env(), check=False)
        except subprocess.TimeoutExpired as exc:
            stderr = (exc.stderr or b"").decode(errors="replace")
            raise CommandError(f"timed out after {timeout:g} s on {self.host}", argv=argv,
                               exit_status=None, stderr=stderr) from None
        except OSError as exc:
            raise SSHError(f"cannot run {self.ssh}: {exc.strerror or exc}") from exc
        if proc.returncode == EXIT_SSH:
            raise o.classify(proc.stderr.decode("utf-8", "replace"), self.route, argv)
        return proc

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        askpass = env.get(ASKPASS_ENV)
        if askpass:  # the same program answers ssh's own prompts (its argv[1] is the prompt)
            env.update({"SSH_ASKPASS": askpass, "SSH_ASKPASS_REQUIRE": "force"})
        return env

    @staticmethod
    def _plain(argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SSHError(f"`{' '.join(argv)}` failed: {exc}") from exc

    # --- tunnels -----------------------------------------------------------------------------
    def forward(self, target: dict[str, Any], port: int, notify: Any = None) -> Any:
        from hpcnb.openssh.forward import open_forward

        self.ensure_master()
        return open_forward(self, target, port)

    def logout(self) -> bool:
        """End hpcnb's own master for this route (never the user's); whether one was running."""
        if self.control.kind != "hpcnb" or not self.master_alive():
            return False
        self._plain([self.ssh, "-O", "exit", *self.options, "--", self.host])
        return True

    def close(self) -> None:
        # A master hpcnb started for one command only (persist = "no") ends with it.
        if self._started_master and self.control.kind == "hpcnb" and not self.cfg.persist:
            with contextlib.suppress(SSHError):
                self._plain([self.ssh, "-O", "exit", *self.options, "--", self.host])

    def __enter__(self) -> OpenSSHRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def own_masters(folder: Path | None = None) -> list[Path]:
    """The ControlMaster sockets hpcnb started (in its private folder) that still answer."""
    from hpcnb.keeper import endpoint as ep

    where = folder or ep.runtime_folder()
    ssh = shutil.which("ssh")
    if ssh is None or not where.is_dir():
        return []
    alive = []
    for sock in sorted(where.glob("ssh-*")):
        if sock.suffix == ".lock":
            continue
        try:
            check = subprocess.run([ssh, "-o", f"ControlPath={o.quote_path(str(sock))}", "-O", "check",
                                    "hpcnb-master"], capture_output=True, timeout=10, check=False,
                                   stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if check.returncode == 0:
            alive.append(sock)
        elif _refused(sock):
            sock.unlink(missing_ok=True)  # a master that died left its socket
    return alive


def _refused(sock: Path) -> bool:
    """Nothing listens on this socket any more (not merely a check that failed for another reason)."""
    import socket

    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(sock))
        except (ConnectionRefusedError, FileNotFoundError):
            return True
        except OSError:
            return False
    return False


def end_master(sock: Path) -> bool:
    """`ssh -O exit` on one of hpcnb's masters; whether it answered."""
    ssh = shutil.which("ssh") or "ssh"
    try:
        proc = subprocess.run([ssh, "-o", f"ControlPath={o.quote_path(str(sock))}", "-O", "exit",
                               "hpcnb-master"], capture_output=True, timeout=10, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0
