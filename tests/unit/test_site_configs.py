"""Every shipped site config: it validates, cites its centre's documentation, and renders a job script
(`submit --dry-run` through the real CLI) that passes `bash -n`."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from hpcnb_driver import Hpcnb

from hpcnb.config import load_cluster
from hpcnb.paths import site_config_dir

SITES = sorted(p.stem for p in site_config_dir().glob("*.toml"))
REAL = [s for s in SITES if s != "local"]
URL = re.compile(r"https://[^\s)\"]+")


@pytest.fixture(autouse=True)
def no_user_config(tmp_path, monkeypatch):
    monkeypatch.delenv("HPCNB_CONFIG", raising=False)
    monkeypatch.delenv("HPCNB_CLUSTER", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_the_six_real_sites_are_shipped():
    assert set(REAL) == {"perlmutter", "stampede3", "derecho", "anvil", "euler", "gadi"}


@pytest.mark.parametrize("site", SITES)
def test_validates(site):
    cfg = load_cluster(site)
    assert cfg.name == site and cfg.description
    if site != "local":
        assert cfg.login_host and cfg.docs and cfg.docs.startswith("https://")


@pytest.mark.parametrize("site", REAL)
def test_header_cites_the_documentation_it_was_checked_against(site):
    text = (site_config_dir() / f"{site}.toml").read_text()
    header = text.split("description =", 1)[0]
    assert URL.search(header.splitlines()[1] + header.splitlines()[2]), "a doc URL at the top"
    assert re.search(r"verified", header, re.IGNORECASE), "say what was (or was not) verified"


@pytest.mark.parametrize("site", SITES)
def test_dry_run_renders_valid_bash(tmp_path, site):
    hpcnb = Hpcnb(tmp_path / "state", home=tmp_path / "home")
    hpcnb.env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    cfg = load_cluster(site)
    args = ["submit", "--cluster", site, "--dry-run", "--hours", "1", "--name", "nb"]
    if cfg.account_required:
        args += ["--account", "ab12"]
    proc = hpcnb.run(*args)
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    directive = {"slurm": "#SBATCH", "pbs": "#PBS"}.get(cfg.scheduler)
    if directive:
        assert directive in script
    if cfg.partition:
        assert cfg.partition in script
    for line in cfg.setup:
        assert line in script
    assert not (tmp_path / "state").exists()


def test_account_required_sites_refuse_to_render_without_one(tmp_path):
    hpcnb = Hpcnb(tmp_path / "state", home=tmp_path / "home")
    hpcnb.env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    required = [s for s in REAL if load_cluster(s).account_required]
    assert required
    for site in required:
        proc = hpcnb.run("submit", "--cluster", site, "--dry-run")
        assert proc.returncode != 0 and "account" in proc.stderr.lower()


def test_sites_command_lists_them_all(tmp_path):
    hpcnb = Hpcnb(tmp_path / "state", home=tmp_path / "home")
    rows = json.loads(hpcnb.run("sites", "--json", check=True).stdout)
    assert [r["name"] for r in rows] == SITES
    by_name = {r["name"]: r for r in rows}
    assert by_name["gadi"]["scheduler"] == "pbs" and by_name["gadi"]["login_host"] == "gadi.nci.org.au"
    assert by_name["local"]["login_host"] is None
    table = hpcnb.run("sites", check=True).stdout
    assert table.splitlines()[0].split()[:3] == ["NAME", "SCHEDULER", "LOGIN"]
    assert all(name in table for name in SITES)
