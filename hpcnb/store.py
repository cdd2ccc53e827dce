"""The local record of sessions: one sqlite3 file in the user's state dir.

Several hpcnb processes may use it at once, so: WAL journal, a 10 s busy timeout, short
transactions, BEGIN IMMEDIATE for every write (a deferred transaction that later upgrades to a write
lock fails with SQLITE_BUSY without waiting: https://sqlite.org/lang_transaction.html). The schema
version is PRAGMA user_version; MIGRATIONS[i] upgrades i -> i+1. The Jupyter token is never stored.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from hpcnb import paths
from hpcnb.errors import HpcnbError
from hpcnb.schedulers.base import JobState

BUSY_TIMEOUT_S = 10.0

# A job's final states, and "ended": a job that neither the queue nor the history knows any more.
ENDED = "ended"
FINAL_STATES = frozenset({*(state.value for state in JobState if state.is_final), ENDED})


@dataclass(frozen=True)
class SessionRecord:
    """One submitted notebook job. `state` is a JobState value (or "ended": left every record)."""

    cluster: str
    job_id: str
    name: str | None
    scheduler: str
    partition: str | None
    tunnel: str
    submitted_at: float
    state: str
    node: str | None
    time_left_s: int | None
    updated_at: float
    local_port: int | None = None
    ended_at: float | None = None
    ports: str | None = None  # the node's other forwarded ports, JSON {"8787": 41234} (hpcnb forward)

    def forwarded(self) -> dict[int, int]:
        """The node's other ports -> their local ports, as last attached."""
        try:
            return {int(k): int(v) for k, v in json.loads(self.ports or "{}").items()}
        except (ValueError, TypeError, AttributeError):
            return {}


_COLUMNS = tuple(f.name for f in fields(SessionRecord))
# The columns of schema version 2, as migration 1 -> 2 copies them (later versions add columns).
_V2_COLUMNS = ", ".join(_COLUMNS[:13])
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM sessions"
_KEY = " WHERE cluster = ? AND job_id = ?"
# What `hpcnb list` prints, a plain tuple per session (a SessionRecord each was half the time of
# `list --all` over 10,000 sessions): job id, cluster, name, state, partition, node, time left
# (none once ended).
_TABLE_SELECT = ("SELECT job_id, cluster, COALESCE(name, ''), state, COALESCE(partition, ''),"
                 " COALESCE(node, ''), CASE WHEN ended_at IS NULL THEN time_left_s END FROM sessions")

_TABLE = """(
    cluster TEXT NOT NULL, job_id TEXT NOT NULL, name TEXT, scheduler TEXT NOT NULL,
    partition TEXT, tunnel TEXT NOT NULL, submitted_at REAL NOT NULL, state TEXT NOT NULL,
    node TEXT, time_left_s INTEGER, updated_at REAL NOT NULL, local_port INTEGER,{v1}
    ended_at REAL, PRIMARY KEY (cluster, job_id))"""
_INDEXES = (
    # `list` is ORDER BY submitted_at DESC, rowid DESC: walk an index backwards, no sort step.
    "CREATE INDEX sessions_submitted ON sessions (submitted_at)",
    "CREATE INDEX sessions_cluster_submitted ON sessions (cluster, submitted_at)",
    # Live jobs are few; `active_job_ids` and `list(include_ended=False)` read only this.
    "CREATE INDEX sessions_active ON sessions (cluster, submitted_at) WHERE ended_at IS NULL",
)
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: version 1 had a url_path column, never written.
    ("CREATE TABLE sessions " + _TABLE.format(v1=" url_path TEXT,"), *_INDEXES),
    # 1 -> 2: without it. A new table, not DROP COLUMN (SQLite >= 3.35 only; Debian 11 has 3.34).
    (
        "CREATE TABLE sessions_v2 " + _TABLE.format(v1=""),
        f"INSERT INTO sessions_v2 ({_V2_COLUMNS}) SELECT {_V2_COLUMNS} FROM sessions",
        "DROP TABLE sessions",
        "ALTER TABLE sessions_v2 RENAME TO sessions",
        *_INDEXES,
    ),
    # 2 -> 3: the node's other forwarded ports (hpcnb forward, `ports`), for list --json.
    ("ALTER TABLE sessions ADD COLUMN ports TEXT",),
    # 3 -> 4: the clusters whose session folders this store has looked through (Cluster.sessions
    # finds there the sessions it does not know: another laptop's, or a lost store's).
    ("CREATE TABLE looked_up (cluster TEXT PRIMARY KEY, at REAL NOT NULL)",),
)
SCHEMA_VERSION = len(MIGRATIONS)


class _Damaged(Exception):
    def __init__(self, error: sqlite3.Error) -> None:
        super().__init__(str(error))
        self.error = error


class Store:
    """Sessions keyed by (cluster, job_id). Use as a context manager or call close()."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.moved_aside: Path | None = None  # where a damaged store file was put (see _open)
        try:
            self._open()
        except _Damaged as damaged:
            self.moved_aside = self._move_aside(damaged.error)
            self._open()

    def _move_aside(self, error: sqlite3.Error) -> Path:
        """A store SQLite cannot read (truncated, overwritten): kept beside, never deleted, so
        nothing in it is lost for good; a new store starts (Cluster.sessions finds the running
        sessions again on the cluster)."""
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            for suffix in ("", "-wal", "-shm"):
                part = self.path.with_name(self.path.name + suffix)
                if part.exists():
                    part.rename(aside.with_name(aside.name + suffix))
        except OSError as exc:
            raise HpcnbError(f"session store {self.path} is damaged ({error}) and cannot be moved "
                             f"aside ({exc})", hint=f"move it aside yourself: mv {self.path} "
                             f"{self.path}.broken") from exc
        return aside

    def _open(self) -> None:
        paths.make_private_dirs(self.path.parent)
        try:
            self.path.touch(mode=0o600, exist_ok=False)
            self.path.chmod(0o600)  # sqlite gives the -wal and -shm files this file's mode
        except FileExistsError:
            pass  # an existing store keeps the mode its owner gave it
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as e:
            raise self._error(e) from e
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")  # persistent; a no-op once set
            self._db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable across app crashes
            # A truncated file can still answer the first pages: ~2 ms for 10,000 sessions.
            check = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(check)
            self._migrate()
        except sqlite3.OperationalError as e:  # locked, permissions, a full disk: not damage
            self._db.close()
            raise self._error(e) from e
        except sqlite3.Error as e:
            self._db.close()
            raise _Damaged(e) from e
        except BaseException:
            self._db.close()
            raise

    def _error(self, e: sqlite3.Error) -> HpcnbError:
        if isinstance(e, sqlite3.OperationalError):  # locked, permissions, disk full
            return HpcnbError(f"session store {self.path}: {e}")
        return HpcnbError(
            f"session store {self.path} is damaged ({e})",
            hint=f"move it aside, e.g. `mv {self.path} {self.path}.broken`, and hpcnb starts a new "
            "one; running jobs are not affected, but hpcnb forgets them",
        )

    def _migrate(self) -> None:
        if self._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")  # read the version again under the write lock
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise HpcnbError(
                    f"session store {self.path} has schema version {version}; this hpcnb knows "
                    f"up to {SCHEMA_VERSION}",
                    hint="upgrade hpcnb, or move the file aside to start a new one",
                )
            for steps in MIGRATIONS[version:]:
                for sql in steps:
                    self._db.execute(sql)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        """Run one statement in its own BEGIN IMMEDIATE transaction; return the rows changed."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = self._db.execute(sql, params).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise self._error(e) from e
        return n

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise self._error(e) from e

    def add(self, record: SessionRecord) -> None:
        """Record a session. Same (cluster, job_id) replaces the old row (schedulers reuse ids)."""
        if record.ended_at is None and record.state in FINAL_STATES:
            record = replace(record, ended_at=record.updated_at)
        marks = ", ".join("?" * len(_COLUMNS))
        sql = f"INSERT OR REPLACE INTO sessions ({', '.join(_COLUMNS)}) VALUES ({marks})"
        self._write(sql, tuple(getattr(record, c) for c in _COLUMNS))

    def get(self, cluster: str, job_id: str) -> SessionRecord | None:
        rows = self._read(_SELECT + _KEY, (cluster, job_id))
        return SessionRecord(*rows[0]) if rows else None

    def update_status(
        self,
        cluster: str,
        job_id: str,
        *,
        state: str,
        node: str | None = None,
        time_left_s: int | None = None,
        ended_at: float | None = None,
    ) -> bool:
        """Store a fresh status; False if no such session.

        node=None keeps the known node (a finished job no longer reports one); time_left_s is
        always replaced. A final state sets ended_at (now unless given; the first end time wins);
        a live state again (Slurm requeues preempted jobs under the same id) clears it.
        """
        now = time.time()
        if ended_at is None and state in FINAL_STATES:
            ended_at = now
        sql = (
            "UPDATE sessions SET state = ?, node = COALESCE(?, node), time_left_s = ?,"
            " ended_at = CASE WHEN ? THEN NULL ELSE COALESCE(ended_at, ?) END, updated_at = ?"
            + _KEY
        )
        live = state not in FINAL_STATES and state != "unknown"
        params = (state, node, time_left_s, live, ended_at, now, cluster, job_id)
        return self._write(sql, params) > 0

    def set_local_port(self, cluster: str, job_id: str, local_port: int | None,
                       ports: dict[int, int] | None = None) -> bool:
        """Remember where the tunnel listens (and the node's other ports); False if no such session."""
        sql = "UPDATE sessions SET local_port = ?, ports = ?, updated_at = ?" + _KEY
        text = json.dumps({str(k): v for k, v in ports.items()}) if ports else None
        return self._write(sql, (local_port, text, time.time(), cluster, job_id)) > 0

    def list(
        self, cluster: str | None = None, *, include_ended: bool = True, limit: int | None = None
    ) -> list[SessionRecord]:
        """Sessions, newest submission first."""
        sql, params = _listing(_SELECT, cluster, include_ended, limit)
        return [SessionRecord(*row) for row in self._read(sql, params)]

    def table(self, cluster: str, *, include_ended: bool) -> list[tuple]:
        """`list`'s rows (see _TABLE_SELECT), newest submission first."""
        sql, params = _listing(_TABLE_SELECT, cluster, include_ended, None)
        return self._read(sql, params)

    def active_job_ids(self, cluster: str) -> list[str]:
        """Job ids not known to have ended, oldest first: the ones to ask the scheduler about."""
        rows = self._read(
            "SELECT job_id FROM sessions WHERE cluster = ? AND ended_at IS NULL"
            " ORDER BY submitted_at, rowid",
            (cluster,),
        )
        return [r[0] for r in rows]

    def needs_look(self, cluster: str) -> bool:
        """This store has not yet looked for the cluster's sessions on the cluster itself."""
        return not self._read("SELECT 1 FROM looked_up WHERE cluster = ?", (cluster,))

    def looked(self, cluster: str) -> None:
        self._write("INSERT OR REPLACE INTO looked_up (cluster, at) VALUES (?, ?)", (cluster, time.time()))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _listing(select: str, cluster: str | None, include_ended: bool, limit: int | None
             ) -> tuple[str, tuple[object, ...]]:
    """The one query behind every listing of sessions: newest submission first."""
    where, params = [], []
    if cluster is not None:
        where.append("cluster = ?")
        params.append(cluster)
    if not include_ended:
        where.append("ended_at IS NULL")
    sql = select + (f" WHERE {' AND '.join(where)}" if where else "")
    sql += " ORDER BY submitted_at DESC, rowid DESC LIMIT ?"
    params.append(-1 if limit is None else limit)
    return sql, tuple(params)


def recent_sessions(path: Path, cluster: str | None, *, active_only: bool, limit: int = 200
                    ) -> list[tuple[str, str, str | None, str]]:
    """(job_id, cluster, name, state), newest first, read-only: never creates, migrates or locks the
    store (shell completion reads this on every <TAB>). [] when there is no store yet."""
    if not path.is_file():
        return []
    sql, params = _listing("SELECT job_id, cluster, name, state FROM sessions", cluster,
                           not active_only, limit)
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1.0)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
