"""`submit --dry-run` through the real CLI: the script for each scheduler is valid bash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hpcnb_driver import Hpcnb

TESTBED_CONFIG = Path(__file__).resolve().parents[1] / "testbed" / "hpcnb.toml"


@pytest.mark.parametrize("cluster", ["testbed", "testbed-torque", "local"])
def test_dry_run_prints_a_script_that_passes_bash_n(tmp_path, cluster):
    hpcnb = Hpcnb(tmp_path / "state", config=TESTBED_CONFIG)
    proc = hpcnb.run("submit", "--cluster", cluster, "--dry-run", "--hours", "2", "--name", "nb1",
                     check=True)
    script = proc.stdout
    assert script.startswith("#!/bin/bash -l\n" if cluster == "testbed" else "#!/bin/bash\n")
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "nb1" in script
    assert not (tmp_path / "state").exists(), "a dry run records nothing"


def test_python_dash_m_and_help(tmp_path):
    hpcnb = Hpcnb(tmp_path / "state")
    proc = hpcnb.run("--help", check=True)
    for command in ("submit", "list", "attach", "cancel", "logs"):
        assert command in proc.stdout


@pytest.mark.parametrize("flags, fragment", [
    (["--hours", "0"], "--hours"),
    (["--hours", "-1"], "--hours"),
    (["--hours", "abc"], "--hours"),
    (["--partition", "debug; rm -rf ~"], "--partition"),
])
def test_bad_values_are_one_line_errors(tmp_path, flags, fragment):
    hpcnb = Hpcnb(tmp_path / "state", config=TESTBED_CONFIG)
    proc = hpcnb.run("submit", "--cluster", "testbed", "--dry-run", *flags)
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_cluster_is_a_config_error(tmp_path):
    hpcnb = Hpcnb(tmp_path / "state", config=TESTBED_CONFIG)
    proc = hpcnb.run("list", "--cluster", "nope")
    assert proc.returncode == 3
    assert "nope" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["attach", "1", "--port", "abc"], ["submit", "--bogus"],
                                  ["nosuchcmd"], ["attach"]])
def test_clicks_own_refusals_are_one_line_too(tmp_path, args):
    proc = Hpcnb(tmp_path / "state").run(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpcnb: error:"), proc.stderr
