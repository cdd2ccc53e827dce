"""`hpcnb doctor` against the real testbed: passes for Slurm and PBS; fails, with a fix, for a broken
setup line and for a login host nothing answers (a testbed address behind its unreachable route)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hpcnb_driver import Hpcnb

pytestmark = pytest.mark.cluster

# Inside the testbed's 10.213.0.0/16, which the laptop side routes as `unreachable`, and used by no
# host of the testbed: connecting fails at once with "no route to host".
UNUSED_TESTBED_ADDRESS = "10.213.77.77"


def variant(testbed: Path, tmp_path: Path, name: str, **changes: str) -> Path:
    """A config file with one cluster copied from the testbed's `testbed` table, with changes."""
    table = testbed.read_text().split("[clusters.testbed]", 1)[1].split("\n[", 1)[0]
    lines = []
    for line in table.strip().splitlines():
        key = line.split("=", 1)[0].strip()
        lines.append(f"{key} = {changes[key]}" if key in changes else line)
    path = tmp_path / f"{name}.toml"
    path.write_text(f"[clusters.{name}]\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("cluster", ["testbed", "testbed-torque"])
def test_doctor_passes_on_the_testbed(testbed, tmp_path, cluster):
    hpcnb = Hpcnb(tmp_path / "state", config=testbed)
    proc = hpcnb.run("doctor", "--cluster", cluster)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("OK")]
    assert names[:3] == ["config", "account", "ssh"]
    assert "jupyter" in names and len(names) == len(proc.stdout.splitlines())
    assert "FAIL" not in proc.stdout and "\x1b[" not in proc.stdout
    report = json.loads(hpcnb.run("doctor", "--cluster", cluster, "--json").stdout)
    assert report["ok"] is True and report["cluster"] == cluster
    assert {c["name"] for c in report["checks"]} >= {"config", "ssh", "scheduler commands", "jupyter"}
    assert all(c["ok"] for c in report["checks"])


def test_a_broken_setup_line_fails_with_a_fix(testbed, tmp_path):
    config = variant(testbed, tmp_path, "broken", setup='["source /nonexistent"]')
    proc = Hpcnb(tmp_path / "state", config=config).run("doctor", "--cluster", "broken")
    assert proc.returncode == 6, proc.stdout + proc.stderr
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and "jupyter" in failed[0]
    assert "source /nonexistent" in failed[0] and "No such file" in failed[0]
    fix = proc.stdout.splitlines()[proc.stdout.splitlines().index(failed[0]) + 1]
    assert "fix:" in fix and str(config) in fix
    assert "OK   ssh" in proc.stdout  # everything before it still passed


def test_an_unreachable_login_host_fails_fast_with_a_fix(testbed, tmp_path):
    config = variant(testbed, tmp_path, "faraway", login_host=f'"{UNUSED_TESTBED_ADDRESS}"')
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    proc = hpcnb.run("doctor", "--cluster", "faraway", timeout=60)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    ssh = next(line for line in lines if " ssh " in f" {line} ")
    assert ssh.startswith("FAIL") and UNUSED_TESTBED_ADDRESS in ssh
    assert "fix:" in lines[lines.index(ssh) + 1]
    assert [line.split()[0] for line in lines[lines.index(ssh) + 2:]] == ["-", "-", "-"]  # skipped
    report = json.loads(hpcnb.run("doctor", "--cluster", "faraway", "--json").stdout)
    assert report["ok"] is False
    ssh_check = next(c for c in report["checks"] if c["name"] == "ssh")
    assert ssh_check["fix"] and not ssh_check["ok"]


def test_an_unknown_cluster_is_a_config_failure(testbed, tmp_path):
    proc = Hpcnb(tmp_path / "state", config=testbed).run("doctor", "--cluster", "nope")
    assert proc.returncode == 3
    assert proc.stdout.startswith("FAIL config") and "fix:" in proc.stdout
