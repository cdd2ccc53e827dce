"""Site profiles (hpcnb.profiles): `--partition gpu` resolves to the site's GPU recipe, limits are
checked before anything is submitted (one line, naming the limit and the doc), a user's config
adds or overrides profiles, and the rendered directives carry the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcnb.config import load_cluster
from hpcnb.errors import ConfigError, UsageError
from hpcnb.render import render_script
from hpcnb.request import build_request

SITE = """\
description = "Example (Slurm; queues are QOS)"
docs = "https://docs.example.org/jobs/"
scheduler = "slurm"
login_host = "login.example.org"
partition = "cpu"
partition_flag = "--qos"
account_required = true
account_example = "m1234"
max_hours = 48
unverified = ["the 48 h limit"]

[profiles.cpu]
partition = "shared"
constraint = "cpu"
mem = "2G"

[profiles.gpu]
partition = "regular"
constraint = "gpu"
account_suffix = "_g"
gpus = 1
max_gpus = 4
cpus_per_gpu = 32
mem_per_gpu = "60G"
docs = "https://docs.example.org/gpu/"

[profiles.debug]
partition = "debug"
max_hours = 0.5
refuse = ["mem"]
"""

PBS_SITE = """\
scheduler = "pbs"
login_host = "gadi.example.org"
account_flag = "-P"
pbs_resources = "flat"
gpu_flag = "ngpus"
partition = "normal"

[profiles.normal]
partition = "normal"
cpus = 1
mem = "4G"
resources = { jobfs = "1GB" }

[profiles.gpu]
partition = "gpuvolta"
gpus = 1
max_gpus = 4
cpus_per_gpu = 12
refuse = ["cpus"]
"""


@pytest.fixture
def sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site-configs"
    folder.mkdir()
    (folder / "example.toml").write_text(SITE)
    (folder / "pbsite.toml").write_text(PBS_SITE)
    monkeypatch.setattr("hpcnb.paths.site_config_dir", lambda: folder)
    monkeypatch.setenv("HPCNB_CONFIG", str(tmp_path / "config.toml"))
    (tmp_path / "config.toml").write_text("")
    monkeypatch.delenv("HPCNB_CLUSTER", raising=False)
    return tmp_path


def refused(message_part: str, cluster: str = "example", **values: object) -> str:
    with pytest.raises(UsageError) as info:
        build_request(load_cluster(cluster), **values)  # type: ignore[arg-type]
    text = str(info.value)
    assert message_part in text, text
    assert "\n" not in text
    return text


def test_gpu_means_the_sites_gpu_recipe(sites: Path) -> None:
    request = build_request(load_cluster("example"), partition="gpu", account="m1234", gpus=2)
    assert (request.profile, request.partition, request.constraint) == ("gpu", "regular", "gpu")
    assert request.account == "m1234_g"  # GPU jobs charge the project's GPU account
    assert (request.gpus, request.cpus, request.mem_mb) == (2, 64, 2 * 60 * 1024)
    script = render_script(load_cluster("example"), request, "slurm")
    for line in ("#SBATCH --qos=regular", "#SBATCH --constraint=gpu", "#SBATCH --account=m1234_g",
                 "#SBATCH --gpus=2", "#SBATCH --cpus-per-task=64", "#SBATCH --mem=120G"):
        assert line in script.splitlines(), line


def test_default_profile_and_gpu_default(sites: Path) -> None:
    cpu = build_request(load_cluster("example"), account="m1234")
    assert (cpu.profile, cpu.partition, cpu.gpus, cpu.mem_mb) == ("cpu", "shared", None, 2048)
    gpu = build_request(load_cluster("example"), partition="gpu", account="m1234_g")
    assert (gpu.gpus, gpu.cpus, gpu.account) == (1, 32, "m1234_g")  # suffix not doubled


def test_a_name_that_is_no_profile_is_the_partition(sites: Path) -> None:
    request = build_request(load_cluster("example"), partition="overrun", account="m1")
    assert (request.profile, request.partition, request.constraint) == (None, "overrun", None)


def test_limits_are_refused_before_submitting_with_the_doc(sites: Path) -> None:
    text = refused("at most 0.5 hours", partition="debug", hours=1, account="m1")
    assert "profile 'debug' of cluster example" in text and "https://docs.example.org/jobs/" in text
    text = refused("--gpus", partition="cpu", gpus=1, account="m1")
    assert "has no GPUs" in text
    assert "at most 4" in refused("--gpus", partition="gpu", gpus=8, account="m1")
    assert "https://docs.example.org/gpu/" in refused("--gpus", partition="gpu", gpus=8, account="m1")
    text = refused("--mem", partition="debug", mem="4G", account="m1")
    assert "not accepted" in text
    assert "at most 48 hours" in refused("--hours", hours=49, account="m1")


def test_missing_account_names_what_one_looks_like(sites: Path) -> None:
    text = refused("--account")
    assert "m1234" in text and "https://docs.example.org/jobs/" in text


def test_pbs_profile_resources_and_cores_per_gpu(sites: Path) -> None:
    cfg = load_cluster("pbsite")
    normal = build_request(cfg, account="ab12")
    script = render_script(cfg, normal, "pbs")
    assert "#PBS -l ncpus=1,mem=4gb" in script.splitlines()
    assert "#PBS -l jobfs=1GB" in script.splitlines()
    gpu = build_request(cfg, partition="gpu", gpus=2, account="ab12")
    assert "#PBS -l ncpus=24,ngpus=2" in render_script(cfg, gpu, "pbs").splitlines()
    assert "#PBS -q gpuvolta" in render_script(cfg, gpu, "pbs").splitlines()
    refused("--cpus", cluster="pbsite", partition="gpu", cpus=4)


def test_user_config_adds_and_overrides_profiles(sites: Path) -> None:
    (sites / "config.toml").write_text(
        '[clusters.mine]\nextends = "example"\naccount = "m99"\n'
        '[clusters.mine.profiles.gpu]\nmax_gpus = 8\n'
        '[clusters.mine.profiles.big]\npartition = "bigmem"\nmem = "500G"\n')
    cfg = load_cluster("mine")
    assert cfg.profile("gpu").max_gpus == 8 and cfg.profile("gpu").constraint == "gpu"  # type: ignore[union-attr]
    assert build_request(cfg, partition="gpu", gpus=8).account == "m99_g"
    assert build_request(cfg, partition="big").mem_mb == 500 * 1024


@pytest.mark.parametrize(("table", "expect"), [
    ('[profiles.x]\ncolour = "red"\n', "unknown key 'colour'"),
    ('[profiles.x]\nmax_gpus = -1\n', "max_gpus must be"),
    ('[profiles.x]\nrefuse = ["everything"]\n', "refuse must be"),
    ('[profiles.x]\nconstraint = "gpu;rm"\n', "constraint must be"),
    ('[profiles.x]\nresources = { jobfs = "1 GB" }\n', "resources must be"),
    ('[profiles.x]\ndirectives = ["--x=\'a b\'"]\n', "not a plain option"),
    ('[profiles."a b"]\n', "profile name"),
])
def test_bad_profiles_are_config_errors(sites: Path, table: str, expect: str) -> None:
    (sites / "site-configs" / "bad.toml").write_text('scheduler = "slurm"\nlogin_host = "h"\n' + table)
    with pytest.raises(ConfigError, match=r"bad\.toml") as info:
        load_cluster("bad")
    assert expect in str(info.value)


def test_no_hours_means_one_hour_or_the_profiles_shorter_limit(sites: Path) -> None:
    cfg = load_cluster("example")
    assert build_request(cfg, account="m1").walltime_seconds == 3600
    assert build_request(cfg, partition="debug", account="m1").walltime_seconds == 1800


def test_another_profiles_account_suffix_is_replaced_not_doubled(sites: Path) -> None:
    (sites / "config.toml").write_text(
        '[clusters.delta]\nextends = "example"\n'
        '[clusters.delta.profiles.cpu]\naccount_suffix = "-delta-cpu"\n'
        '[clusters.delta.profiles.gpu]\naccount_suffix = "-delta-gpu"\n')
    cfg = load_cluster("delta")
    assert build_request(cfg, partition="gpu", account="bbka-delta-cpu").account == "bbka-delta-gpu"
    assert build_request(cfg, partition="gpu", account="bbka").account == "bbka-delta-gpu"
    assert build_request(cfg, account="bbka-delta-gpu").account == "bbka-delta-cpu"


def test_a_profiles_own_setup_lines_and_gpu_model(sites: Path) -> None:
    (sites / "config.toml").write_text(
        '[clusters.alliance]\nextends = "example"\nsetup = ["module load python"]\n'
        '[clusters.alliance.profiles.gpu]\nsetup = ["module load python-gpu"]\ngpu_type = "a100"\n')
    cfg = load_cluster("alliance")
    script = render_script(cfg, build_request(cfg, partition="gpu", account="m1", gpus=2), "slurm")
    assert "#SBATCH --gpus=a100:2" in script.splitlines()
    assert "module load python-gpu" in script and "'module load python'" not in script
    assert "'module load python'" in render_script(cfg, build_request(cfg, account="m1"), "slurm")


def test_jupyter_env_may_name_the_project_folder() -> None:
    from hpcnb.jupyter_env import check_path

    assert check_path("/project/{account}/$USER/jupyter", "project_465000123") == \
        "/project/project_465000123/$USER/jupyter"
    with pytest.raises(UsageError, match="account"):
        check_path("/project/{account}/jupyter", None)
    assert check_path("~/envs") == "$HOME/envs"
    for bad in ("$(id)", "/a/../b", "a b", "`id`", "${HOME:-x}"):
        with pytest.raises(UsageError):
            check_path(bad)
