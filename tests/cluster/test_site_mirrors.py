"""Site mirrors (issue 10 item 6): every shipped site config's profiles, put to a real scheduler on
the testbed that is set up like that site. The mirror of a site (tests/testbed/mirrors/<site>.toml)
is written from the centre's own documentation, not from the site config under test; the testbed
package builds it (testbed/mirror_slurm*.py, testbed/mirror_pbs.py):

  * Slurm sites: a private slurmctld with the site's partitions (MaxTime, AllowAccounts/AllowQos,
    exclusive), QOS with their limits (enforced through the testbed's slurmdbd), node features,
    GPU gres, and the site's documented submit rules (job_submit.lua); asked with
    `sbatch --test-only` as the testbed's user;
  * PBS sites: the testbed's real OpenPBS server with the site's queues (resources_max), custom
    resources (jobfs, storage, filesystems; ngpus) and rules (a queuejob hook); `qsub -h` as the
    user, the job deleted at once.

For each profile of each site, three checks: hpcnb's default request is accepted; its request at
hpcnb's own limits for the profile (walltime, GPUs, cores) is accepted, so hpcnb allows nothing
the site refuses; and, where the mirror knows the site's walltime limit, the default script with
its walltime set one minute past it (hpcnb's own check bypassed by editing the directive) is
refused for that reason. What a mirror cannot check is listed in its file (`not_checked`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import mirrors, topology
from testbed.mirror_pbs import PbsMirror, held_job_attrs
from testbed.mirror_slurm_run import MirrorPool

from hpcnb import Cluster, paths
from hpcnb.config import ClusterConfig
from hpcnb.schedulers.base import hms
from hpcnb.schedulers.slurm import slurm_time

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.cluster

SLURM = mirrors.load_all("slurm")
PBS = mirrors.load_all("pbs")
BY_SITE = {m.site: m for m in SLURM + PBS}

# What the mirrors found wrong in hpcnb itself, which no site config can fix (docs/site-configs.md,
# "Site mirrors"): (site, profile) -> (what every refusal says, why). Such a case is an expected
# failure only while it fails for exactly that reason; the day hpcnb is fixed it fails until removed.
# (ARCHER2's GPU profiles were one: hpcnb always sent --ntasks=1; a profile's `ntasks = false` now
# leaves it out.)
KNOWN: dict[tuple[str, str], tuple[str, str]] = {}
SLURM_TIME_REFUSALS = ("Requested time limit is invalid", "QOSMaxWallDurationPerJobLimit")
PBS_TIME_REFUSAL = "Job violates queue and/or server resource limits"


def site_file(site: str) -> dict[str, Any]:
    with paths.site_config_files()[site].open("rb") as fh:
        return tomllib.load(fh)


def cases(ordered: list[mirrors.Mirror]) -> list[Any]:
    """(site, profile) for every profile of every mirrored site, in the order the mirrors come up."""
    out = []
    for mirror in ordered:
        for profile in sorted(site_file(mirror.site).get("profiles", {})):
            out.append(pytest.param(mirror.site, profile, id=f"{mirror.site}-{profile}"))
    return out


@pytest.fixture(scope="module")
def mirror_run(testbed) -> Iterator[None]:
    """One mirror run at a time on this machine (they share slurmdbd's QOS and the PBS server)."""
    with mirrors.mirror_lock():
        yield


@pytest.fixture(scope="module")
def slurm_pool(mirror_run) -> Iterator[MirrorPool]:
    with MirrorPool(SLURM) as pool:
        yield pool


class PbsPool:
    """One PBS site's mirror at a time on the shared server."""

    def __init__(self) -> None:
        self.site: str | None = None
        self.live: PbsMirror | None = None

    def get(self, site: str) -> PbsMirror:
        if self.site != site:
            self.close()
            self.live, self.site = PbsMirror(BY_SITE[site]).__enter__(), site
        assert self.live is not None
        return self.live

    def close(self) -> None:
        live, self.live, self.site = self.live, None, None
        if live is not None:
            live.__exit__()


@pytest.fixture(scope="module")
def pbs_pool(mirror_run) -> Iterator[PbsPool]:
    pool = PbsPool()
    try:
        yield pool
    finally:
        pool.close()


class Renderer:
    """hpcnb's job script for a site's profile, from the shipped site config with the login host
    pointed at the testbed (as a user's `extends = SITE` config would), through the Python API."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp_path, self.monkeypatch = tmp_path, monkeypatch

    def cluster(self, mirror: mirrors.Mirror) -> Cluster:
        port = topology.PBS_LOGIN_PORT if mirror.scheduler == "pbs" else 22
        config = self.tmp_path / "hpcnb.toml"
        config.write_text(f'[clusters.mirror]\nextends = "{mirror.site}"\n'
                          f'login_host = "{topology.LOGIN.addr}"\n'
                          f'user = "{topology.USERS[0]}"\nport = {port}\n')
        self.monkeypatch.setenv("HPCNB_CONFIG", str(config))
        self.monkeypatch.delenv("HPCNB_CLUSTER", raising=False)
        return Cluster("mirror", state_dir=self.tmp_path / "state")

    def scripts(self, mirror: mirrors.Mirror, profile: str) -> tuple[str, str]:
        """(default request, request at hpcnb's limits for the profile)."""
        with self.cluster(mirror) as cluster:
            values: dict[str, Any] = {"partition": profile}
            if mirror.account:
                values["account"] = mirror.account
            return cluster.script(**values), cluster.script(**values, **at_limits(cluster.cfg, profile))


def at_limits(cfg: ClusterConfig, name: str) -> dict[str, Any]:
    """The most the profile lets a user ask for: its walltime, GPUs and cores."""
    profile = cfg.profile(name)
    assert profile is not None, name
    values: dict[str, Any] = {}
    if profile.max_hours or cfg.max_hours:
        values["hours"] = profile.max_hours or cfg.max_hours
    if profile.has_gpus and "gpus" not in profile.refuse:
        values["gpus"] = profile.max_gpus
    if profile.max_cpus and "cpus" not in profile.refuse:
        values["cpus"] = profile.max_cpus
    return values


@pytest.fixture
def render(tmp_path, monkeypatch) -> Renderer:
    return Renderer(tmp_path, monkeypatch)


def directive(script: str, prefix: str, pattern: str) -> str | None:
    found = re.search(rf"^{re.escape(prefix)} {pattern}$", script, re.MULTILINE)
    return found.group(1) if found else None


def directives(script: str) -> str:
    return "\n".join(ln for ln in script.splitlines() if ln.startswith(("#SBATCH", "#PBS")))


def verdict(site: str, profile: str, problems: list[str]) -> None:
    """Pass, fail, or an expected failure (KNOWN) while it fails for its known reason only."""
    known = KNOWN.get((site, profile))
    if known is None:
        assert not problems, "\n\n".join(problems)
        return
    says, why = known
    assert problems, f"{site} {profile} passes now: remove it from KNOWN ({why})"
    assert all(says in problem for problem in problems), "\n\n".join(problems)
    pytest.xfail(why)


def over_walltime(script: str, prefix: str, limit: int) -> str:
    """The script with its walltime one minute past the site's limit (hpcnb would refuse to write it)."""
    if prefix == "#SBATCH":
        line, pattern = f"#SBATCH --time={slurm_time(limit + 60)}", r"^#SBATCH --time=\S+$"
    else:
        line, pattern = f"#PBS -l walltime={hms(limit + 60)}", r"^#PBS -l walltime=\S+$"
    over, count = re.subn(pattern, line, script, flags=re.MULTILINE)
    assert count == 1, directives(script)
    return over


@pytest.mark.parametrize(("site", "profile"), cases(MirrorPool(SLURM).order()))
def test_slurm_site_profile(site: str, profile: str, slurm_pool: MirrorPool, render: Renderer) -> None:
    mirror = BY_SITE[site]
    default, limits = render.scripts(mirror, profile)
    live = slurm_pool.get(site)
    problems = []
    for what, script in (("the default request", default), ("the request at hpcnb's limits", limits)):
        proc = live.test_only(script)
        if proc.returncode != 0 or "to start at" not in proc.stderr:
            problems.append(f"{what} is refused by the {site} mirror (sbatch --test-only exited "
                            f"{proc.returncode}: {proc.stderr.strip()}):\n{directives(script)}")
    partition = directive(default, "#SBATCH", r"--partition=(\S+)")
    limit = mirror.slurm_limit(partition, directive(default, "#SBATCH", r"--qos=(\S+)"))
    if limit is not None:
        over = over_walltime(default, "#SBATCH", limit)
        proc = live.test_only(over)
        if proc.returncode == 0 or not any(text in proc.stderr for text in SLURM_TIME_REFUSALS):
            problems.append(f"a walltime past the {site} mirror's limit ({slurm_time(limit)}) is not "
                            f"refused for its time (exit {proc.returncode}: {proc.stderr.strip()}):\n"
                            + directives(over))
    verdict(site, profile, problems)


@pytest.mark.parametrize(("site", "profile"), cases(PBS))
def test_pbs_site_profile(site: str, profile: str, pbs_pool: PbsPool, render: Renderer) -> None:
    mirror = BY_SITE[site]
    default, limits = render.scripts(mirror, profile)
    live = pbs_pool.get(site)
    queue = directive(default, "#PBS", r"-q (\S+)")
    assert mirror.queue(queue) is not None, f"profile {profile} sends queue {queue!r}: not one of {site}'s"
    problems = []
    for what, script in (("the default request", default), ("the request at hpcnb's limits", limits)):
        proc = live.qsub_held(script)
        job = proc.stdout.strip()
        if proc.returncode != 0 or not job:
            problems.append(f"{what} is refused by the {site} mirror (qsub exited {proc.returncode}: "
                            f"{proc.stderr.strip()}):\n{directives(script)}")
        elif f"queue = {queue}\n" not in (attrs := held_job_attrs(job)):
            problems.append(f"{what} did not land in queue {queue}:\n{attrs}")
    limit = mirror.pbs_limit(queue)
    if limit is not None:
        over = over_walltime(default, "#PBS", limit)
        proc = live.qsub_held(over)
        if proc.returncode == 0 or PBS_TIME_REFUSAL not in proc.stderr:
            problems.append(f"a walltime past the {site} mirror's limit ({hms(limit)}) is not refused "
                            f"(exit {proc.returncode}: {proc.stderr.strip()}):\n{directives(over)}")
    verdict(site, profile, problems)


# The mirrors refuse what their sites refuse: a profile's default script, changed as a wrong site
# config would change it, and what the mirror answers. (Without these, a mirror that accepted
# everything would pass the tests above.)
SLURM_REFUSALS = [
    ("delta", "gpu", r"--account=bbka-delta-gpu", "--account=bbka-delta-cpu", "Invalid account"),
    ("stampede3", "cpu", r"(#SBATCH --ntasks=1)", r"\1\n#SBATCH --mem=4G", "--mem is not available"),
    ("sherlock", "gpu", r"#SBATCH --gpus=1\n", "", "must request GPUs"),
    ("expanse", "gpu", r"--gpus=1$", "--gpus=4", "QOS policy"),
    ("anvil", "gpu-debug", r"--gpus-per-node=1$", "--gpus-per-node=3", "QOS policy"),
    ("archer2", "long", r"--time=\S+$", "--time=02:00:00", "minimum walltime of 24 hrs"),
    ("archer2", "cpu", r"--qos=standard$", "--qos=serial", "QOS"),
    ("archer2", "serial", r"--cpus-per-task=4$", "--cpus-per-task=33", "QOS policy"),
    ("perlmutter", "gpu", r"--constraint=gpu$", "--constraint=cpu", "node configuration is not available"),
    ("perlmutter", "cpu", r"--qos=shared$", "--qos=premium", "Invalid qos"),
    ("lumi", "cpu", r"#SBATCH --account=\S+\n", "", "is mandatory"),
    ("frontier", "gpu", r"--gpus=8$", "--gpus=9", "node configuration is not available"),
    ("vista", "cpu", r"--partition=gg$", "--partition=gg-dev", "Invalid partition"),
]
PBS_REFUSALS = [
    ("polaris", "debug", r"#PBS -l filesystems=\S+\n", "", "filesystems is required to be set"),
    ("polaris", "debug", r"filesystems=home:eagle$", "filesystems=home:grand", "valid filesystems are"),
    ("aurora", "debug", r"#PBS -A \S+\n", "", "Account_Name is required to be set"),
    ("derecho", "cpu", r"#PBS -A \S+\n", "", "must specify the project code"),
    ("gadi", "gpu", r"ncpus=12,", "ncpus=16,", "12 x ngpus"),
    ("gadi", "debug", r"ncpus=4,", "ncpus=3201,", "resource limits"),
    ("gadi", "cpu", r"-l jobfs=10GB$", "-l scratchfs=10GB", "Unknown resource"),
]


def by_wave(refusals: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The Slurm cases in the order that brings each wave of mirrors up once: the last wave first
    (test_slurm_site_profile leaves it up)."""
    order = [mirror.site for wave in reversed(MirrorPool(SLURM).waves) for mirror in wave]
    return sorted(refusals, key=lambda case: order.index(case[0]))


def edited(script: str, pattern: str, replacement: str) -> str:
    out, count = re.subn(pattern, replacement, script, flags=re.MULTILINE)
    assert count == 1, f"{pattern!r} is not once in:\n{directives(script)}"
    return out


@pytest.mark.parametrize(("site", "profile", "pattern", "replacement", "says"), by_wave(SLURM_REFUSALS),
                         ids=[f"{c[0]}-{c[1]}-{c[4]}" for c in by_wave(SLURM_REFUSALS)])
def test_slurm_mirror_refuses(site: str, profile: str, pattern: str, replacement: str, says: str,
                              slurm_pool: MirrorPool, render: Renderer) -> None:
    script = edited(render.scripts(BY_SITE[site], profile)[0], pattern, replacement)
    proc = slurm_pool.get(site).test_only(script)
    assert proc.returncode != 0 and says.lower() in proc.stderr.lower(), \
        f"exit {proc.returncode}: {proc.stderr.strip()}\n{directives(script)}"


@pytest.mark.parametrize(("site", "profile", "pattern", "replacement", "says"), PBS_REFUSALS,
                         ids=[f"{c[0]}-{c[1]}-{c[4]}" for c in PBS_REFUSALS])
def test_pbs_mirror_refuses(site: str, profile: str, pattern: str, replacement: str, says: str,
                            pbs_pool: PbsPool, render: Renderer) -> None:
    script = edited(render.scripts(BY_SITE[site], profile)[0], pattern, replacement)
    proc = pbs_pool.get(site).qsub_held(script)
    assert proc.returncode != 0 and says.lower() in proc.stderr.lower(), \
        f"exit {proc.returncode}: {proc.stdout.strip()} {proc.stderr.strip()}\n{directives(script)}"
