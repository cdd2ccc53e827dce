"""Every shipped site config: it validates, cites its centre's documentation, has the profiles users
type (cpu, gpu, debug), and every profile renders a job script that passes `bash -n` and refuses
a walltime over its limit (`submit --dry-run` through the CLI, in-process)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from click.testing import CliRunner
from hpcnb_driver import Hpcnb

from hpcnb.cli import cli
from hpcnb.config import load_cluster, tomllib
from hpcnb.errors import UsageError
from hpcnb.paths import site_config_dir
from hpcnb.render import render_script
from hpcnb.request import build_request

SITES = sorted(p.stem for p in site_config_dir().glob("*.toml"))
REAL = [s for s in SITES if s != "local"]
URL = re.compile(r"https://[^\s)\"]+")


@pytest.fixture(autouse=True)
def no_user_config(tmp_path, monkeypatch):
    monkeypatch.delenv("HPCNB_CONFIG", raising=False)
    monkeypatch.delenv("HPCNB_CLUSTER", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_at_least_fourteen_real_sites_are_shipped():
    assert {"perlmutter", "stampede3", "derecho", "anvil", "euler", "gadi"} <= set(REAL)
    assert len(REAL) >= 14


@pytest.mark.parametrize("site", REAL)
def test_profiles_users_type_and_what_the_site_needs(site):
    cfg = load_cluster(site)
    names = {p.name for p in cfg.profiles}
    assert {"cpu", "debug"} <= names, names
    if any(p.has_gpus for p in cfg.profiles):
        assert cfg.profile("gpu") is not None and cfg.profile("gpu").has_gpus  # type: ignore[union-attr]
    assert cfg.profile(cfg.partition) is not None, "the default is one of its profiles"
    if cfg.account_required:
        assert cfg.account_example, "say what an account looks like there"
    assert cfg.jupyter_env, "where `hpcnb jupyter install` should put its env"
    assert cfg.max_hours


def _account(cfg):
    return cfg.account_example or "ab12"


@pytest.mark.parametrize("site", REAL)
def test_every_profile_renders_and_refuses_over_its_limit(site):
    cfg = load_cluster(site)
    for profile in cfg.profiles:
        values = {"partition": profile.name, "account": _account(cfg), "hours": 1}
        if profile.refuse and "account" in profile.refuse:
            values.pop("account")
        if (profile.max_hours or cfg.max_hours) < 1:
            values["hours"] = profile.max_hours or cfg.max_hours
        if profile.min_hours:
            values["hours"] = profile.min_hours
        request = build_request(cfg, **values)
        script = render_script(cfg, request, cfg.scheduler)
        check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        assert check.returncode == 0, (profile.name, check.stderr)
        if profile.partition:
            assert f" {profile.partition}" in script or f"={profile.partition}" in script, profile.name
        limit = profile.max_hours or cfg.max_hours
        with pytest.raises(UsageError, match="at most"):
            build_request(cfg, **{**values, "hours": limit + 1})


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
    assert all(line.startswith("#") or not line.strip() for line in header.splitlines())
    assert len(URL.findall(header)) >= 2, "the doc pages it was checked against, at the top"
    assert re.search(r"checked against|verified", header, re.IGNORECASE)
    assert re.search(r"could not|not verif|unverified", header, re.IGNORECASE), "say what was not"
    assert "unverified" in tomllib.loads(text), "the `unverified` list (empty only if all was checked)"


@pytest.mark.parametrize("site", SITES)
def test_dry_run_renders_valid_bash(tmp_path, site):
    cfg = load_cluster(site)
    args = ["submit", "--cluster", site, "--dry-run", "--hours", "1", "--name", "nb"]
    if cfg.account_required:
        args += ["--account", _account(cfg)]
    proc = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert proc.exit_code == 0, proc.output
    script = proc.stdout
    profile = cfg.profile(cfg.partition)
    if profile is not None:
        assert f"profile {profile.name} of {site}:" in proc.stderr
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    directive = {"slurm": "#SBATCH", "pbs": "#PBS"}.get(cfg.scheduler)
    if directive:
        assert directive in script
    partition = profile.partition if profile is not None else cfg.partition
    if partition:
        assert partition in script
    for line in cfg.setup:
        assert line in script


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
