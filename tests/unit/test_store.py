"""hpcnb.store: round trips, status updates, ordering, filters, modes, corruption, concurrency."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest

from hpcnb.errors import HpcnbError
from hpcnb.store import SCHEMA_VERSION, SessionRecord, Store


def rec(
    job_id: str, *, cluster: str = "testbed", submitted_at: float = 1000.0, **kw
) -> SessionRecord:
    base = SessionRecord(
        cluster=cluster,
        job_id=job_id,
        name="nb",
        scheduler="slurm",
        partition="debug",
        tunnel="direct",
        submitted_at=submitted_at,
        state="pending",
        node=None,
        time_left_s=None,
        updated_at=submitted_at,
    )
    return replace(base, **kw)


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "state" / "sessions.db") as s:
        yield s


def test_round_trip(store: Store) -> None:
    r = rec("42", node="n1", time_left_s=3600, local_port=8899)
    store.add(r)
    assert store.get("testbed", "42") == r
    assert store.get("testbed", "43") is None
    assert store.get("other", "42") is None
    assert store.list() == [r]


def test_same_key_replaces_and_clusters_are_separate(store: Store) -> None:
    store.add(rec("1"))
    store.add(rec("1", cluster="other"))
    store.add(rec("1", name="second"))
    assert store.get("testbed", "1").name == "second"
    assert len(store.list()) == 2


def test_update_status(store: Store) -> None:
    store.add(rec("7"))
    assert store.update_status("testbed", "7", state="running", node="c3", time_left_s=600)
    got = store.get("testbed", "7")
    assert (got.state, got.node, got.time_left_s, got.ended_at) == ("running", "c3", 600, None)
    assert got.updated_at > 1000.0
    # A finished job no longer reports its node: keep the one we knew; the end time is set once.
    assert store.update_status("testbed", "7", state="timeout")
    got = store.get("testbed", "7")
    assert (got.state, got.node, got.time_left_s) == ("timeout", "c3", None)
    first_end = got.ended_at
    assert first_end is not None
    store.update_status("testbed", "7", state="timeout", ended_at=first_end + 50)
    assert store.get("testbed", "7").ended_at == first_end
    # Slurm requeues a preempted job under the same id: it is live again.
    store.update_status("testbed", "7", state="pending")
    assert store.get("testbed", "7").ended_at is None
    assert not store.update_status("testbed", "nope", state="running")


def test_explicit_end_time_and_unknown_keeps_it(store: Store) -> None:
    store.add(rec("8"))
    store.update_status("testbed", "8", state="cancelled", ended_at=1234.5)
    store.update_status("testbed", "8", state="unknown")
    assert store.get("testbed", "8").ended_at == 1234.5


def test_set_local_port(store: Store) -> None:
    store.add(rec("9"))
    assert store.set_local_port("testbed", "9", 8890)
    assert store.get("testbed", "9").local_port == 8890
    assert not store.set_local_port("testbed", "missing", 1)


def test_ordering_limit_and_cluster_filter(store: Store) -> None:
    store.add(rec("b", submitted_at=2000.0))
    store.add(rec("a", submitted_at=3000.0))
    store.add(rec("c", submitted_at=1000.0, cluster="other"))
    store.add(rec("d", submitted_at=2000.0))  # same time as "b": later insert counts as newer
    assert [r.job_id for r in store.list()] == ["a", "d", "b", "c"]
    assert [r.job_id for r in store.list(limit=2)] == ["a", "d"]
    assert [r.job_id for r in store.list("other")] == ["c"]
    assert store.list("nowhere") == []


def test_include_ended_and_active_ids(store: Store) -> None:
    store.add(rec("1", submitted_at=1.0))
    store.add(rec("2", submitted_at=2.0))
    store.add(rec("3", submitted_at=3.0, state="failed"))  # final state on add counts as ended
    store.add(rec("4", submitted_at=4.0, cluster="other"))
    store.update_status("testbed", "1", state="completed")
    assert [r.job_id for r in store.list("testbed", include_ended=False)] == ["2"]
    assert [r.job_id for r in store.list(include_ended=False)] == ["4", "2"]
    assert [r.job_id for r in store.list("testbed")] == ["3", "2", "1"]
    assert store.active_job_ids("testbed") == ["2"]


def test_file_modes(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "sessions.db"
    with Store(path) as s:
        s.add(rec("1"))
        for p in (path, Path(f"{path}-wal")):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for d in (path.parent, path.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with Store(path) as s:  # reopening keeps the data and migrates nothing
        assert s.get("testbed", "1") == rec("1")


@pytest.mark.parametrize("damage", ["junk", "truncated"])
def test_a_damaged_store_is_kept_aside_and_a_new_one_starts(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "sessions.db"
    if damage == "junk":
        path.write_bytes(b"this is not a database, it is somebody's notes\n" * 200)
    else:  # half a real store: SQLite reads its first page, and the rest is gone
        with Store(path) as s:
            for i in range(2000):
                s.add(rec(str(i)))
        with path.open("r+b") as fh:
            fh.truncate(path.stat().st_size // 2)
    before = path.read_bytes()
    with Store(path) as s:
        assert s.moved_aside is not None and s.moved_aside.name.startswith("sessions.db.damaged-")
        assert s.moved_aside.read_bytes() == before  # nothing of it is lost
        assert s.list() == [] and s.needs_look("testbed")
        s.add(rec("1"))
    with Store(path) as s:
        assert s.moved_aside is None and s.get("testbed", "1") == rec("1")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HpcnbError, match="schema version"):
        Store(path)


def _worker(path: str, n: int, barrier, errors) -> None:
    try:
        with Store(Path(path)) as s:
            barrier.wait()
            for i in range(200):
                s.add(rec(f"{n}-{i}", submitted_at=time.time()))
                if i % 10 == 0:
                    s.list(limit=50)
                    s.update_status("testbed", f"{n}-{i}", state="running", node=f"c{n}")
    except Exception as e:  # noqa: BLE001 - report any failure to the parent
        errors.put(f"worker {n}: {type(e).__name__}: {e}")


def test_concurrent_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    path = tmp_path / "state" / "sessions.db"  # fresh: the 8 processes also race to create it
    barrier, errors = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(path), n, barrier, errors)) for n in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    assert [p.exitcode for p in procs] == [0] * 8
    with Store(path) as s:
        ids = {r.job_id for r in s.list()}
        assert ids == {f"{n}-{i}" for n in range(8) for i in range(200)}
        assert s.get("testbed", "3-40").node == "c3"


def test_list_10000_rows_newest_first(tmp_path: Path) -> None:
    # Speed is measured by bench/run.py, never asserted here (shared, noisy machines).
    with Store(tmp_path / "sessions.db") as s:
        s._db.execute("BEGIN")  # one bulk transaction, for the setup only
        s._db.executemany(
            "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [tuple(vars(rec(str(i), submitted_at=float(i))).values()) for i in range(10_000)],
        )
        s._db.execute("COMMIT")
        assert len(s.list()) == 10_000
        assert s.list(limit=1)[0].job_id == "9999"


def test_a_version_2_store_gains_the_forwarded_ports(tmp_path: Path) -> None:
    """Today's store before `ports` (schema 2): migrated in place, rows kept, ports then stored."""
    from hpcnb.store import MIGRATIONS

    path = tmp_path / "sessions.db"
    with sqlite3.connect(path) as db:
        for steps in MIGRATIONS[:2]:
            for sql in steps:
                db.execute(sql)
        db.execute("PRAGMA user_version = 2")
        db.execute("INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   ("testbed", "7", "nb", "slurm", "debug", "direct", 1.0, "running", "node01",
                    60, 2.0, 8888, None))
    with Store(path) as s:
        old = s.get("testbed", "7")
        assert old is not None and old.node == "node01" and old.forwarded() == {}
        assert s.set_local_port("testbed", "7", 8888, {8787: 41234})
        assert s.get("testbed", "7").forwarded() == {8787: 41234}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def test_a_store_file_of_schema_3_is_migrated(tmp_path: Path) -> None:
    """tests/unit/captured/sessions_schema3.db: written by hpcnb as of 2026-12-01 (schema 3, two
    sessions, one with forwarded ports). Today's hpcnb migrates it in place and keeps every row."""
    path = tmp_path / "sessions.db"
    shutil.copy(Path(__file__).parent / "captured" / "sessions_schema3.db", path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    with Store(path) as s:
        running, ended = s.list("testbed")
        assert (running.job_id, running.state, running.node) == ("41", "running", "node01")
        assert running.local_port == 8888
        assert running.forwarded() == {8787: 41234}
        assert (ended.job_id, ended.partition, ended.tunnel) == ("40", "gpu", "node-ssh")
        assert ended.ended_at == 1796145000.0
        assert s.needs_look("testbed")
        s.looked("testbed")
        assert not s.needs_look("testbed") and s.needs_look("other")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
