"""The site mirrors' descriptions (tests/testbed/mirrors/*.toml), checked without the testbed: every
shipped Slurm and PBS site has one, each fact names its doc URL, what they refer to exists, the
files generated from them are well formed, and every profile's partition, QOS or queue is one the
mirror knows. The real scheduler runs are tests/cluster/test_site_mirrors.py."""

from __future__ import annotations

import sys

import pytest
from testbed import mirrors
from testbed.mirror_pbs import hook_source, queue_lines
from testbed.mirror_slurm import job_submit_lua, sacctmgr_setup, sacctmgr_user, slurm_conf, waves

from hpcnb.paths import site_config_files

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ALL = mirrors.load_all()
BY_SITE = {m.site: m for m in ALL}
TESTBED_QOS = {"normal"}  # the testbed slurmdbd's own QOS, which a mirror may name but not define


def site(name: str) -> dict:
    with site_config_files()[name].open("rb") as fh:
        return tomllib.load(fh)


def test_every_slurm_and_pbs_site_has_a_mirror():
    shipped = {name: site(name)["scheduler"] for name in site_config_files()
               if site(name).get("scheduler") in {"slurm", "pbs"}}
    assert {m.site: m.scheduler for m in ALL} == shipped


@pytest.mark.parametrize("mirror", ALL, ids=lambda m: m.site)
def test_a_mirror_refers_only_to_what_it_has(mirror: mirrors.Mirror):
    assert mirror.docs and all(d.startswith("https://") for d in mirror.docs)
    nodes = {n.name for n in mirror.nodes}
    qos = {q.name for q in mirror.qos} | TESTBED_QOS
    for part in mirror.partitions:
        assert set(part.nodes) <= nodes, part
        assert set(part.allow_qos) | ({part.qos} if part.qos else set()) <= qos, part
        assert set(part.allow_accounts) <= set(mirror.accounts), part
    assert set(mirror.qos_access) | ({mirror.default_qos} if mirror.default_qos else set()) <= qos
    assert sum(p.default for p in mirror.partitions) <= 1
    names = {p.name for p in mirror.partitions} | {q.name for q in mirror.queues}
    for rule in mirror.rules:
        assert {rule.partition, *rule.queues} - {None} <= names, rule
        assert rule.qos is None or rule.qos in qos, rule


@pytest.mark.parametrize("mirror", mirrors.load_all("slurm"), ids=lambda m: m.site)
def test_slurm_files_are_generated(mirror: mirrors.Mirror, tmp_path):
    conf = slurm_conf(mirror, tmp_path, 7000)
    assert f"ClusterName=mirror_{mirror.site}" in conf
    assert all(f"PartitionName={p.name} " in conf for p in mirror.partitions)
    assert conf.count("State=CLOUD") == len(mirror.nodes)
    assert ("JobSubmitPlugins=lua" in conf) == bool(mirror.rules)
    assert job_submit_lua(mirror).count("message = ") == len(mirror.rules)
    lines = sacctmgr_setup(mirror)
    assert lines[0] == f"add cluster mirror_{mirror.site}" and lines[-1].startswith("add account ")
    assert sacctmgr_user(mirror).startswith(f"add user hpcuser account={mirror.accounts[0]}")


@pytest.mark.parametrize("mirror", mirrors.load_all("pbs"), ids=lambda m: m.site)
def test_pbs_hook_and_queues_are_generated(mirror: mirrors.Mirror):
    compile(hook_source(mirror), f"{mirror.site}-hook", "exec")
    lines = queue_lines(mirror)
    assert all(any(f"create queue {q.name} " in ln and "started = false" in ln for ln in lines)
               for q in mirror.queues)


def test_a_wave_of_slurm_mirrors_shares_no_qos_and_no_account():
    for wave in waves(mirrors.load_all("slurm")):
        qos = [q.name for m in wave for q in m.qos]
        accounts = [a.lower() for m in wave for a in m.accounts]
        assert len(qos) == len(set(qos)) and len(accounts) == len(set(accounts))


def profiles() -> list:
    return [pytest.param(m.site, name, id=f"{m.site}-{name}")
            for m in ALL for name in site(m.site)["profiles"]]


@pytest.mark.parametrize(("name", "profile"), profiles())
def test_every_profile_names_what_its_mirror_has(name: str, profile: str):
    raw, mirror = site(name), BY_SITE[name]
    values = raw["profiles"][profile]
    if mirror.scheduler == "pbs":
        assert mirror.queue(values.get("partition")) is not None, values
        return
    by_qos = raw.get("partition_flag", "--partition") == "--qos"
    partition = None if by_qos else values.get("partition")
    qos = values.get("qos") or (values.get("partition") if by_qos else None)
    assert mirror.partition(partition) is not None, f"partition {partition!r} (None: the default)"
    assert qos is None or qos in {q.name for q in mirror.qos} | TESTBED_QOS, qos
