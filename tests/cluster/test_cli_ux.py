"""-v and -q against the real testbed: -v shows the commands hpcnb runs on the login host."""

from __future__ import annotations

import pytest
from hpcnb_driver import Hpcnb, derived_config

pytestmark = pytest.mark.cluster


def test_verbose_shows_commands_run_on_the_cluster(testbed, tmp_path):
    proc = Hpcnb(tmp_path / "state", config=testbed).run("-v", "doctor", "--cluster", "testbed")
    assert proc.returncode == 0, proc.stderr
    assert "hpcnb: hpcnb.remote: run: sinfo --noheader --format=%P" in proc.stderr
    assert "-> exit 0 in" in proc.stderr


def test_quiet_doctor_prints_nothing_when_all_is_well(testbed, tmp_path):
    proc = Hpcnb(tmp_path / "state", config=testbed).run("-q", "doctor", "--cluster", "testbed-torque")
    assert proc.returncode == 0
    assert proc.stdout == "" and proc.stderr == ""


def test_quiet_keeps_essential_output_only(testbed, tmp_path):
    # The testbed under a name of its own: no session folders there (a new laptop's `list` would
    # otherwise find the running sessions of others on the shared home).
    config = derived_config(tmp_path / "config.toml", testbed, {"quiet-test": ("testbed", {})})
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    proc = hpcnb.run("-q", "list", "--cluster", "quiet-test", check=True)
    assert proc.stdout == "" and proc.stderr == ""  # "no active sessions" is a note
    proc = hpcnb.run("list", "--cluster", "quiet-test", check=True)
    assert "no active sessions" in proc.stderr
    proc = hpcnb.run("-q", "list", "--cluster", "nope")
    assert proc.returncode == 3 and "nope" in proc.stderr  # errors are never silenced
