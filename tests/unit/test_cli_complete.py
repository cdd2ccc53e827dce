"""Shell completion through click's own protocol (`_HPCNB_COMPLETE=bash_complete`), as bash calls it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hpcnb.store import SessionRecord, Store

TESTBED_CONFIG = Path(__file__).resolve().parents[1] / "testbed" / "hpcnb.toml"


def complete(words: str, state: Path, config: Path | None = TESTBED_CONFIG) -> list[str]:
    env = {**os.environ, "_HPCNB_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
           "HPCNB_STATE_DIR": str(state)}
    env.pop("HPCNB_CLUSTER", None)
    if config is None:
        env.pop("HPCNB_CONFIG", None)
    else:
        env["HPCNB_CONFIG"] = str(config)
    proc = subprocess.run([sys.executable, "-m", "hpcnb"], capture_output=True, text=True, env=env,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return [line.split(",", 1)[1] for line in proc.stdout.splitlines() if line.startswith("plain,")]


def test_commands(tmp_path):
    assert complete("hpcnb at", tmp_path) == ["attach"]
    assert set(complete("hpcnb ", tmp_path)) >= {"submit", "list", "attach", "cancel", "logs", "doctor",
                                                 "sites", "config"}
    assert complete("hpcnb config ", tmp_path) == ["init", "path"]


def test_cluster_names_from_sites_and_user_config(tmp_path):
    names = complete("hpcnb submit --cluster ", tmp_path)
    assert {"testbed", "testbed-torque", "perlmutter", "gadi", "local"} <= set(names)
    assert complete("hpcnb list -c testbed-torque", tmp_path) == ["testbed-torque", "testbed-torque-node-ssh"]


def test_a_broken_config_still_completes_site_names(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    names = complete("hpcnb list --cluster ", tmp_path, config=bad)
    assert "perlmutter" in names


def test_job_ids_from_the_local_store_without_creating_it(tmp_path):
    state = tmp_path / "state"
    assert complete("hpcnb attach ", state) == []
    assert not state.exists(), "completion must not create the state dir"
    now = time.time()
    with Store(state / "sessions.db") as store:
        for cluster, job_id, ended in (("testbed", "101", None), ("testbed", "102", now),
                                       ("testbed-torque", "201", None)):
            store.add(SessionRecord(cluster=cluster, job_id=job_id, name="nb", scheduler="slurm",
                                    partition="debug", tunnel="direct", submitted_at=now, state="running",
                                    node=None, time_left_s=None, updated_at=now, ended_at=ended))
    assert sorted(complete("hpcnb attach ", state)) == ["101", "201"]      # active only
    assert sorted(complete("hpcnb logs ", state)) == ["101", "102", "201"]  # ended ones have logs
    assert complete("hpcnb cancel --cluster testbed-torque ", state) == ["201"]
    assert sorted(complete("hpcnb logs 10", state, config=None)) == ["101", "102"]
