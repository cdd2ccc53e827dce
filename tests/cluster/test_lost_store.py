"""The laptop's session store lost or damaged (issue 16): hpcnb says so in one line, keeps a
damaged file aside, and finds the running session again on the cluster (its session folder, one
scheduler query), so `list` shows it and `attach` reaches it; nothing on the cluster is touched."""

from __future__ import annotations

import pytest
from hpcnb_driver import Hpcnb

pytestmark = pytest.mark.cluster


def _ids(hpcnb: Hpcnb) -> dict[str, str]:
    return {r["job_id"]: r["state"] for r in hpcnb.list_json("testbed")}


def test_a_deleted_or_damaged_store_finds_the_running_session_again(testbed, tmp_path):
    first = Hpcnb(tmp_path / "laptop", config=testbed, home=tmp_path)
    job_id = first.submit("testbed", "--hours", "0.25")
    try:
        # A store with no sessions of this cluster (deleted, or another laptop's): found again.
        other = Hpcnb(tmp_path / "other-laptop", config=testbed, home=tmp_path)
        proc = other.run("list", "--cluster", "testbed", check=True)
        assert job_id in proc.stdout and "running" in proc.stdout
        assert "session(s) on testbed that this laptop had not recorded" in proc.stderr
        assert other.run("list", "--cluster", "testbed", check=True).stderr == ""  # once
        with other.attach(job_id, "testbed") as attached:
            assert attached.http("GET", "/api/status")[0] == 200

        # A damaged store: one line, the file kept aside, the session found again.
        store = tmp_path / "laptop" / "sessions.db"
        for part in (store, store.with_name("sessions.db-wal"), store.with_name("sessions.db-shm")):
            if part.exists():
                part.write_bytes(b"\0garbage\0" * 512)
        proc = first.run("list", "--cluster", "testbed", check=True)
        notes = [line for line in proc.stderr.splitlines() if "damaged" in line]
        assert len(notes) == 1 and "kept as" in notes[0], proc.stderr
        aside = list((tmp_path / "laptop").glob("sessions.db.damaged-*"))
        assert aside and aside[0].read_bytes().startswith(b"\0garbage\0")
        assert _ids(first).get(job_id) == "running"
    finally:
        cancelled = first.run("cancel", job_id, "--cluster", "testbed")
    assert cancelled.returncode == 0, cancelled.stderr
