"""The job -> hpcnb handshake: where the job's files are, what connection.json holds, reading them.

The job (templates/_body.sh.j2 and templates/launcher.py) writes, in the user's home on the
cluster's shared file system, in .hpcnb/sessions/<cluster>/<job id>/:

    connection.json   once Jupyter answers (atomic rename, mode 0600)
    ended             when the job's notebook stops, for any reason
    job.log           everything the job prints

<cluster> is the machine's name in hpcnb (the shipped site config a cluster extends, else its
own name): two clusters that share a home (and job ids) never share a session folder.

hpcnb reads them over the login connection, so any laptop can attach at any time. No log
scraping, and no `jupyter server list` on a login node.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from hpcnb.errors import HpcnbError, UsageError
from hpcnb.names import NAME_RE, NAME_RULE

if TYPE_CHECKING:
    from hpcnb.remote import Remote

SESSIONS_DIR = ".hpcnb/sessions"
LOG_TAIL_LINES = 15


# Slurm ids ("123", "123_4" for arrays), PBS ids ("1234.server", "1234[5].server"), local ids.
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\[\]-]{0,127}$")


def check_job_id(job_id: str) -> str:
    """A job id as schedulers print them; anything else (a path, an option) is refused."""
    if not JOB_ID_RE.match(job_id) or ".." in job_id:
        raise UsageError(f"{job_id!r} is not a job id (as `hpcnb list` shows them)")
    return job_id


@dataclass(frozen=True)
class JobFiles:
    """Where one job's files are on the cluster, relative to the user's home."""

    machine: str  # a cluster name (hpcnb.names), so a safe path part
    job_id: str

    def __post_init__(self) -> None:
        check_job_id(self.job_id)
        if not NAME_RE.match(self.machine):
            raise UsageError(f"{self.machine!r} is not a cluster name ({NAME_RULE})")

    @property
    def folder(self) -> str:
        return f"{SESSIONS_DIR}/{self.machine}/{self.job_id}"

    @property
    def connection(self) -> str:
        return f"{self.folder}/connection.json"

    @property
    def ended(self) -> str:
        return f"{self.folder}/ended"

    @property
    def log(self) -> str:
        return f"{self.folder}/job.log"


@dataclass(frozen=True)
class Handshake:
    """What a running notebook told us: where it listens and its token."""

    job_id: str
    host: str | None
    port: int | None
    socket: str | None
    token: str
    tunnel: str
    node: str | None = None  # the node's own hostname, for the node-ssh and socket hops
    base_url: str = "/"
    walltime_end: float | None = None
    started: float | None = None
    # What runs (hpcnb.apps) and how: older jobs wrote none of these (Jupyter, JupyterLab's /lab).
    app: str = "jupyter"
    login: str = "token"  # token: the URL carries it; password: the user types it (self.token)
    ready: str = "/api/status"  # what answers through the tunnel once it serves
    url_path: str = "/lab"

    def url(self, local_port: int) -> str:
        """What the browser opens: Jupyter's carries its token; a password app's does not."""
        base = self.base_url.rstrip("/")
        url = f"http://127.0.0.1:{local_port}{base}{self.url_path}"
        return f"{url}?token={quote(self.token, safe='')}" if self.login == "token" else url

    @property
    def password(self) -> str | None:
        """The password the user types into the app's login page (code-server, RStudio)."""
        return self.token if self.login == "password" else None


def parse_handshake(data: bytes, job_id: str) -> Handshake:
    """connection.json -> Handshake; a damaged file is an error that says which job's file."""
    try:
        doc = json.loads(data)
        token = doc["token"]
        if not isinstance(token, str) or not token:
            raise ValueError("empty token")
        port = doc.get("port")
        return Handshake(
            job_id=job_id,
            host=doc.get("host"),
            port=int(port) if port is not None else None,
            socket=doc.get("socket"),
            token=token,
            tunnel=str(doc.get("tunnel") or "direct"),
            node=doc.get("node") or None,
            base_url=str(doc.get("base_url") or "/"),
            walltime_end=_float(doc.get("walltime_end")),
            started=_float(doc.get("started")),
            app=str(doc.get("app") or "jupyter"),
            login="password" if doc.get("login") == "password" else "token",
            ready=_path(doc.get("ready"), "/api/status"),
            url_path=_path(doc.get("url_path"), "/lab"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise HpcnbError(
            f"job {job_id}: its connection.json is not a valid handshake ({exc})",
            hint=f"see `hpcnb logs {job_id}`",
        ) from exc


def parse_ended(data: bytes) -> int | None:
    """The exit code recorded in the `ended` file, if it says one."""
    try:
        code = json.loads(data).get("exit_code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def _path(value: object, default: str) -> str:
    """A URL path from the job's file; anything odd (a full URL, spaces) is the default."""
    if isinstance(value, str) and re.match(r"^/[A-Za-z0-9._~/%-]{0,200}\Z", value):
        return value
    return default


def _float(value: object) -> float | None:
    try:
        return float(value) if value is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


# ---- reading them over a Remote (the login connection, or this machine) -------------------------


def read_handshake(remote: Remote, files: JobFiles) -> Handshake | None:
    """The notebook's handshake; None until the job has written it."""
    try:
        data = remote.read_file(files.connection)
    except FileNotFoundError:
        return None
    return parse_handshake(data, files.job_id)


def read_ended(remote: Remote, files: JobFiles) -> int | bool | None:
    """False while the job's notebook runs; else the exit code it recorded (or None)."""
    try:
        return parse_ended(remote.read_file(files.ended))
    except FileNotFoundError:
        return False


def read_log(remote: Remote, files: JobFiles) -> bytes | None:
    """Everything the job has printed so far; None before it started."""
    try:
        return remote.read_file(files.log)
    except FileNotFoundError:
        return None


def log_tail(remote: Remote, files: JobFiles, lines: int = LOG_TAIL_LINES) -> str:
    text = (read_log(remote, files) or b"").decode(errors="replace")
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
