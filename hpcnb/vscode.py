"""`hpcnb code`: VS Code Remote-SSH into a job's node, riding hpcnb's route and login.

VS Code's Remote-SSH runs the system `ssh HOST`; hpcnb gives it a Host entry whose ProxyCommand is
`hpcnb proxy` (hpcnb.nodeaccess), so that ssh reaches the node through the cluster's login host
with hpcnb's kept login (no second MFA prompt), and checks the node's host key strictly under the
node's name. The entries live in hpcnb's own file, ~/.ssh/hpcnb.conf, which ~/.ssh/config includes
(one line at its top, written once, with the user's consent). An entry goes away when its job ends
(`hpcnb code`, `list` and `cancel` tidy them).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from hpcnb.errors import HpcnbError, UsageError

MARK = "# hpcnb:"  # each entry's first line: "# hpcnb: CLUSTER JOBID"
INCLUDE = "Include hpcnb.conf"
_WORD = re.compile(r"^[A-Za-z0-9._@%+=:,/~-]+$")


def ssh_dir() -> Path:
    return Path.home() / ".ssh"


def entries_file() -> Path:
    return ssh_dir() / "hpcnb.conf"


def host_alias(cluster: str, job_id: str) -> str:
    return f"hpcnb-{cluster}-{job_id}"


def _config_value(word: str) -> str:
    """A value in an ssh config line: plain words as they are, others double-quoted (no quote or
    newline can be in one: refused)."""
    if _WORD.match(word):
        return word
    if '"' in word or "\n" in word:
        raise UsageError(f"{word!r} cannot be written into an ssh config")
    return f'"{word}"'


def entry(cluster: str, job_id: str, node: str, ssh_argv: Sequence[str]) -> str:
    """The Host block for a job, from the `ssh` command line hpcnb would run (nodeaccess.ssh_argv):
    its -o options, user, identity and the node become config lines."""
    lines = [f"{MARK} {cluster} {job_id}", f"Host {host_alias(cluster, job_id)}",
             f"    HostName {_config_value(node)}", f"    HostKeyAlias {_config_value(node)}"]
    args = list(ssh_argv[1:])
    i = 0
    while i < len(args):
        flag = args[i]
        if flag == "-o":
            key, _, value = args[i + 1].partition("=")
            if "\n" in value or "\r" in value:
                raise UsageError(f"{key} {value!r} cannot be written into an ssh config")
            lines.append(f"    {key} {value}")  # hpcnb's own values, already in config syntax
            i += 2
        elif flag in ("-l", "-i", "-F"):
            if flag != "-F":
                keyword = "User" if flag == "-l" else "IdentityFile"
                lines.append(f"    {keyword} {_config_value(args[i + 1])}")
            i += 2
        else:
            break  # -t/-T, --, the node: not config
    return "\n".join(lines) + "\n"


def _blocks(text: str) -> list[tuple[tuple[str, str] | None, str]]:
    """The file as (cluster, job) -> block text; None for text that is not an entry."""
    out: list[tuple[tuple[str, str] | None, str]] = []
    for chunk in re.split(rf"(?m)^(?={re.escape(MARK)})", text):
        if not chunk:
            continue
        head = chunk.splitlines()[0]
        parts = head[len(MARK):].split() if head.startswith(MARK) else []
        out.append(((parts[0], parts[1]) if len(parts) == 2 else None, chunk))
    return out


def write_entry(cluster: str, job_id: str, text: str) -> Path:
    """Add (or replace) the job's entry in ~/.ssh/hpcnb.conf (mode 0600)."""
    path = entries_file()
    kept = [b for key, b in _blocks(_read(path)) if key != (cluster, job_id)]
    _write(path, "".join(kept) + text)
    return path


def prune(ended: Callable[[str, str], bool]) -> list[str]:
    """Remove the entries of jobs that have ended; their host aliases."""
    path = entries_file()
    if not path.exists():
        return []
    blocks = _blocks(_read(path))
    gone = [key for key, _ in blocks if key is not None and ended(*key)]
    if gone:
        _write(path, "".join(b for key, b in blocks if key not in gone))
    return [host_alias(*key) for key in gone]


def included() -> bool:
    config = ssh_dir() / "config"
    return config.exists() and any(line.split("#")[0].split() == INCLUDE.split()
                                   for line in _read(config).splitlines())


def include(consent: Callable[[str], bool]) -> bool:
    """Put `Include hpcnb.conf` at the top of ~/.ssh/config (an Include under a Host line would
    apply to that host only), once, if the user agrees; whether it is included now."""
    if included():
        return True
    config = ssh_dir() / "config"
    if not consent(f"add the line `{INCLUDE}` at the top of {config}"):
        return False
    old = _read(config) if config.exists() else ""
    if config.exists():
        try:
            shutil.copy2(config, config.with_name("config.hpcnb-backup"))
        except OSError as exc:
            raise HpcnbError(f"cannot back up {config}: {exc.strerror or exc}") from exc
    _write(config, f"{INCLUDE}  # VS Code hosts of `hpcnb code` (remove to undo)\n{old}")
    return True


def code_command(alias: str, folder: str) -> list[str] | None:
    """`code --remote ssh-remote+ALIAS FOLDER` when VS Code's CLI is on PATH, else None."""
    found = shutil.which("code")
    return [found, "--remote", f"ssh-remote+{alias}", folder] if found else None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise HpcnbError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _write(path: Path, text: str) -> None:
    path = path.resolve()  # a symlinked ~/.ssh/config (dotfile managers) stays a symlink
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise HpcnbError(f"cannot write {path}: {exc.strerror or exc}") from exc
