"""Where a keeper listens, and who may talk to it: pure apart from making its private folder.

One keeper per route: the route's key is a hash of everything that decides where and as whom the
login goes (host, port, user, identity, known_hosts, the ssh config's text and the state folder),
so a keeper is never used for a route that differs in any of them.

POSIX: a unix socket in a folder of mode 0700 owned by this user ($XDG_RUNTIME_DIR/hpcnb, else
/tmp/hpcnb-UID: a socket path must stay under 104 bytes on macOS). Windows has no unix sockets in
Python's socket module; there the endpoint is a named pipe. On both, a client must also prove it can
read the 0600 `authkey` file in that folder (multiprocessing.connection's HMAC challenge): on
Windows that file, in the user's own %LOCALAPPDATA%, is what keeps other users out.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from hpcnb.errors import KeeperError

RUNTIME_ENV = "HPCNB_RUNTIME_DIR"
AUTHKEY_BYTES = 32


@dataclass(frozen=True)
class Endpoint:
    """One keeper's address and its files (all in the private folder)."""

    key: str  # the route key (hex)
    family: str  # multiprocessing.connection family: "AF_UNIX" or "AF_PIPE"
    address: str
    folder: Path

    @property
    def lock(self) -> Path:
        return self.folder / f"{self.key}.lock"  # held while a keeper starts: exactly one starts

    @property
    def info(self) -> Path:
        return self.folder / f"{self.key}.json"  # cluster, route, pid: for `hpcnb connections`

    @property
    def log(self) -> Path:
        return self.folder / f"{self.key}.log"  # the keeper's own stderr

    @property
    def authkey_file(self) -> Path:
        return self.folder / "authkey"


def runtime_folder(env: Mapping[str, str] | None = None, platform: str = sys.platform) -> Path:
    """The folder for this user's keepers (not created here)."""
    env = os.environ if env is None else env
    if env.get(RUNTIME_ENV):
        return Path(env[RUNTIME_ENV]).expanduser()
    if platform == "win32":
        base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "hpcnb" / "keepers"
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "hpcnb"
    return Path(f"/tmp/hpcnb-{os.getuid()}")


def route_key(parts: Mapping[str, object]) -> str:
    """A stable hash of the route's defining values (JSON, sorted keys)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def endpoint_for(key: str, folder: Path, platform: str = sys.platform,
                 user: str | None = None) -> Endpoint:
    if platform == "win32":
        # Named pipes live in one machine-wide namespace: the user's name keeps them apart.
        who = user or os.environ.get("USERNAME", "user")
        return Endpoint(key, "AF_PIPE", rf"\\.\pipe\hpcnb-{who}-{key}", folder)
    address = str(folder / f"{key}.sock")
    # sockaddr_un's sun_path holds 108 bytes on Linux, 104 on macOS and the BSDs, with the NUL.
    limit = 107 if platform.startswith("linux") else 103
    if len(os.fsencode(address)) > limit:
        raise KeeperError(f"the keepers' folder {folder} is too long for a unix socket in it "
                          f"({len(os.fsencode(address))} bytes with the socket's name, at most {limit})",
                          hint=f"set {RUNTIME_ENV} to a shorter folder, e.g. /tmp/hpcnb-{os.getuid()}")
    return Endpoint(key, "AF_UNIX", address, folder)


def private_folder(folder: Path) -> Path:
    """Make `folder` (mode 0700) or check that an existing one is this user's and private: a folder
    someone else made (a shared /tmp) would let them swap the socket."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeeperError(f"cannot make the keepers' folder {folder}: {exc.strerror or exc}") from exc
    if os.name != "posix":
        return folder
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise KeeperError(f"{folder} is not a folder of this user's: no keeper will use it",
                          hint=f"remove it, or set {RUNTIME_ENV} to a private folder")
    if stat.S_IMODE(info.st_mode) & 0o077:
        try:
            folder.chmod(0o700)
        except OSError as exc:
            raise KeeperError(f"{folder} is open to other users and cannot be made private: "
                              f"{exc.strerror}") from exc
    return folder


def authkey(folder: Path) -> bytes:
    """The folder's secret (made once, mode 0600): a client must know it to be served."""
    path = folder / "authkey"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise KeeperError(f"cannot read {path}: {exc.strerror or exc}") from exc
    key = secrets.token_bytes(AUTHKEY_BYTES)
    tmp = folder / f".authkey.{os.getpid()}.{secrets.token_hex(4)}"  # per process and thread
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        try:
            os.link(tmp, path)  # first writer wins; a racing one reads the winner's key
        except FileExistsError:
            return path.read_bytes()
        return key
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise KeeperError(f"no space left for the keeper's files in {folder}",
                              hint="free some space, or set persist = \"no\" for this cluster") from exc
        raise KeeperError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` across processes (two commands starting a keeper at once: the
    second waits, then finds the first one's keeper)."""
    try:
        fh = open(path, "a+b")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise KeeperError(f"cannot open {path}: {exc.strerror or exc}") from exc
    with fh:
        if os.name == "posix":
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        else:  # pragma: no cover - Windows
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
        yield
