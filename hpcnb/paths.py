"""Where things live: shipped templates and site configs, the user's config file, the state dir.

Pure stdlib and cheap to import (the CLI's --help imports this).

Config file location: $HPCNB_CONFIG, else $XDG_CONFIG_HOME/hpcnb/config.toml (default
~/.config/hpcnb/config.toml). On Windows %APPDATA%\\hpcnb\\config.toml. On macOS we use
~/.config too (not ~/Library/Application Support): HPC users live in terminals and dotfiles,
and one documented place on every Unix is simpler than two.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    """The wheel's hpcnb/_data/NAME if present, else the repository's top-level NAME."""
    packaged = _PKG / "_data" / name
    if packaged.is_dir():
        return packaged
    return _PKG.parent / name


def template_dir() -> Path:
    """Folder of the shipped job-script templates (slurm.sh.j2, pbs.sh.j2, local.sh.j2, ...)."""
    return _data_dir("templates")


def site_config_dir() -> Path:
    """Folder of the shipped site configs (one cluster per NAME.toml)."""
    return _data_dir("site-configs")


def site_config_files() -> dict[str, Path]:
    """The shipped site configs by cluster name (the file stem), sorted; files whose stem is not a
    valid cluster name (hpcnb.names) are not site configs."""
    from hpcnb.names import NAME_RE

    folder = site_config_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.toml")) if NAME_RE.match(p.stem)}


def user_config_file() -> Path:
    """The user's config file (it need not exist, unless named by $HPCNB_CONFIG)."""
    explicit = os.environ.get("HPCNB_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "hpcnb" / "config.toml"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "hpcnb" / "config.toml"


def state_dir() -> Path:
    """Where hpcnb keeps its local state (session store). Not created here."""
    explicit = os.environ.get("HPCNB_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "hpcnb"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "hpcnb"


def make_private_dirs(directory: Path) -> None:
    """Create `directory` and its missing parents with mode 0700; existing ones are left alone."""
    missing = []
    for d in (directory, *directory.parents):
        if d.exists():
            break
        missing.append(d)
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another hpcnb process made it first
        if os.name == "posix":
            d.chmod(0o700)  # mkdir's mode is masked by the umask
