"""-v and -q against the real testbed: -v shows the commands hpcnb runs on the login host."""

from __future__ import annotations

import pytest
from hpcnb_driver import Hpcnb

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
