"""The defects a review of the shipped site configs found, each pinned: what a first job at that
site sends (the rendered directives), and what hpcnb refuses before submitting anything. The
citations for each fact are at the top of the site's own file in site-configs/."""

from __future__ import annotations

import pytest

from hpcnb.batch import BatchSystem
from hpcnb.config import load_cluster
from hpcnb.errors import UsageError
from hpcnb.remote import CommandResult
from hpcnb.render import render_script
from hpcnb.request import build_request
from hpcnb.schedulers import JobState
from hpcnb.schedulers.pbs import PBSScheduler


@pytest.fixture(autouse=True)
def no_user_config(tmp_path, monkeypatch):
    monkeypatch.delenv("HPCNB_CONFIG", raising=False)
    monkeypatch.delenv("HPCNB_CLUSTER", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def directives(site: str, **values: object) -> list[str]:
    cfg = load_cluster(site)
    script = render_script(cfg, build_request(cfg, **values), cfg.scheduler)  # type: ignore[arg-type]
    return [line for line in script.splitlines() if line.startswith(("#SBATCH", "#PBS"))]


def test_perlmutter_gpu_is_constraint_gpu_on_the_projects_gpu_account():
    lines = directives("perlmutter", partition="gpu", account="m1234")
    assert "#SBATCH --constraint=gpu" in lines and "#SBATCH --constraint=cpu" not in lines
    assert "#SBATCH --account=m1234_g" in lines and "#SBATCH --gpus=1" in lines
    assert "#SBATCH --constraint=cpu" in directives("perlmutter", account="m1234")


def test_anvil_gpus_are_in_partition_gpu_on_the_gpu_allocation():
    lines = directives("anvil", partition="gpu", account="cis220161")
    assert "#SBATCH --partition=gpu" in lines
    assert "#SBATCH --account=cis220161-gpu" in lines and "#SBATCH --gpus-per-node=1" in lines
    assert load_cluster("anvil").account_example != "x-abc123"  # that was a user name


def test_gadi_gpus_are_in_gpuvolta_with_12_cores_per_gpu():
    lines = directives("gadi", partition="gpu", gpus=2, account="ab12")
    assert "#PBS -q gpuvolta" in lines
    assert any(line.startswith("#PBS -l ncpus=24,") and "ngpus=2" in line for line in lines), lines
    with pytest.raises(UsageError, match="--cpus"):
        build_request(load_cluster("gadi"), partition="gpu", cpus=4)


def test_gadi_jobs_name_cores_memory_and_jobfs():
    lines = directives("gadi", account="ab12")
    assert any(line.startswith("#PBS -l ncpus=") and "mem=" in line for line in lines), lines
    assert any(line.startswith("#PBS -l jobfs=") for line in lines), lines


@pytest.mark.parametrize("profile", ["cpu", "debug", "gpu"])
def test_stampede3_refuses_mem_before_submitting(profile):
    with pytest.raises(UsageError, match="--mem") as info:
        build_request(load_cluster("stampede3"), partition=profile, mem="4G")
    assert "https://docs.tacc.utexas.edu/" in str(info.value)


def test_stampede3_dev_queue_is_two_hours():
    cfg = load_cluster("stampede3")
    assert build_request(cfg, partition="debug", hours=2).partition == "skx-dev"
    with pytest.raises(UsageError, match="at most 2 hours"):
        build_request(cfg, partition="debug", hours=3)
    assert "Jupyter" in (cfg.description or "")  # its python module has none: the user is told


def test_derecho_develop_is_six_hours_and_sends_memory():
    cfg = load_cluster("derecho")
    with pytest.raises(UsageError, match="at most 6 hours"):
        build_request(cfg, account="UABC0001", hours=7)
    lines = directives("derecho", account="UABC0001")
    assert "#PBS -q develop" in lines
    assert any(line.startswith("#PBS -l select=1:") and ":mem=" in line for line in lines), lines


# ---- NCAR's cached qstat (github NCAR/qstat-cache) --------------------------------------------


class CachedQstat:
    """What NCAR's cached qstat answers, and what the server answers past it (QSCACHE_BYPASS)."""

    def __init__(self, live: CommandResult, server: str) -> None:
        self.live, self.server, self.calls = live, server, []

    def run(self, argv, *, stdin=None, timeout=60.0):
        self.calls.append(list(argv))
        if argv[:2] == ["env", "QSCACHE_BYPASS=1"]:
            return CommandResult(list(argv), 0, self.server, "")
        return self.live

    def read_file(self, path):
        raise FileNotFoundError(path)

    def close(self):
        return None


HISTORY = "Job Id: 7.desched1\n    Job_Name = hpcnb\n    job_state = {state}\n    queue = develop\n"


def test_a_finished_job_from_the_cache_is_asked_of_the_history():
    finished = CommandResult(["qstat"], 35, "qstat: 7.desched1 Job has finished, use -x or -H", "")
    remote = CachedQstat(finished, HISTORY.format(state="F") + "    Exit_status = 0\n")
    status = BatchSystem(PBSScheduler(), lambda: remote, cluster="derecho").statuses(["7.desched1"])
    assert status["7.desched1"].state is JobState.COMPLETED
    assert remote.calls[-1][:4] == ["env", "QSCACHE_BYPASS=1", "qstat", "-x"]


def test_a_job_newer_than_the_cache_is_not_taken_for_gone():
    unknown = CommandResult(["qstat"], 153, "qstat: Unknown Job Id 7.desched1", "")
    remote = CachedQstat(unknown, HISTORY.format(state="Q"))
    status = BatchSystem(PBSScheduler(), lambda: remote, cluster="derecho").statuses(["7.desched1"])
    assert status["7.desched1"].state is JobState.PENDING


def test_archer2_long_qos_has_a_minimum_walltime():
    cfg = load_cluster("archer2")
    assert build_request(cfg, partition="long", account="t01").walltime_seconds == 24 * 3600
    with pytest.raises(UsageError, match="at least 24 hours"):
        build_request(cfg, partition="long", account="t01", hours=2)
