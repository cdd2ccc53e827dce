"""`hpcnb config init`: a commented starter config, 0600 in a 0700 folder, never overwritten silently."""

from __future__ import annotations

import os
import stat

import pytest
from hpcnb_driver import Hpcnb


@pytest.fixture
def hpcnb(tmp_path) -> Hpcnb:
    h = Hpcnb(tmp_path / "state", home=tmp_path / "home")
    h.env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    return h


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_writes_a_private_starter_that_loads(hpcnb, tmp_path):
    proc = hpcnb.run("config", "init", check=True)
    target = tmp_path / "xdg" / "hpcnb" / "config.toml"
    assert proc.stdout.strip() == str(target)
    assert mode(target) == 0o600 and mode(target.parent) == 0o700
    text = target.read_text()
    assert text.startswith("# hpcnb configuration") and 'default_cluster = "mycluster"' in text
    assert "hpcnb doctor --cluster mycluster" in proc.stderr
    # what it wrote is a valid config, picked as the default cluster
    dry = hpcnb.run("submit", "--dry-run", check=True).stdout
    assert "#SBATCH" in dry
    assert hpcnb.run("config", "path", check=True).stdout.strip() == str(target)


def test_never_overwrites_without_force(hpcnb, tmp_path):
    target = tmp_path / "xdg" / "hpcnb" / "config.toml"
    target.parent.mkdir(parents=True)
    target.write_text("# mine\n")
    proc = hpcnb.run("config", "init")
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert target.read_text() == "# mine\n"
    hpcnb.run("config", "init", "--force", "--from", "gadi", check=True)
    assert (target.parent / "config.toml.bak").read_text() == "# mine\n"
    assert 'extends = "gadi"' in target.read_text()


def test_from_a_site_with_a_cluster_name(hpcnb, tmp_path):
    hpcnb.run("config", "init", "--from", "perlmutter", "--cluster-name", "pm", check=True)
    text = (tmp_path / "xdg" / "hpcnb" / "config.toml").read_text()
    assert "[clusters.pm]" in text and 'extends = "perlmutter"' in text
    assert "docs: https://" in text
    dry = hpcnb.run("submit", "--dry-run", "--account", "m1234", check=True).stdout
    assert "--qos" in dry


def test_unknown_site_and_bad_name_are_usage_errors(hpcnb, tmp_path):
    proc = hpcnb.run("config", "init", "--from", "nowhere")
    assert proc.returncode == 2 and "hpcnb sites" in proc.stderr
    proc = hpcnb.run("config", "init", "--cluster-name", "bad name")
    assert proc.returncode == 2
    assert not (tmp_path / "xdg" / "hpcnb" / "config.toml").exists()


def test_honours_hpcnb_config(hpcnb, tmp_path):
    hpcnb.env["HPCNB_CONFIG"] = str(tmp_path / "elsewhere" / "c.toml")
    hpcnb.run("config", "init", check=True)
    assert (tmp_path / "elsewhere" / "c.toml").is_file()
