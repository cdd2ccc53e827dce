"""A site mirror on the testbed's real Slurm 22.05: a private slurmctld per site, configured from a
mirror description (mirrors.py), for `sbatch --test-only`. The testbed's own slurmctld is never
touched (other tests use it at the same time).

How, and why (each point found by trying it on the testbed, 2026-12):
  * The mirror's slurmctld runs in login1's network namespace with its own port, ClusterName
    (mirror_<site>), StateSaveLocation, pid and log files in a temporary folder; it shares the
    testbed's munge (one socket on the shared file system) and its slurmdbd.
  * Its nodes never get a slurmd. A node in the default State=UNKNOWN never registers, and
    `sbatch --test-only` then refuses EVERY job ("Requested node configuration is not available");
    `scontrol update state=idle|resume` is refused for such a node ("Invalid node state"). Nodes
    declared State=CLOUD with power saving configured (SuspendProgram/ResumeProgram) start
    "powered down", which Slurm counts as available: --test-only then answers "Job N to start at
    ... on nodes X", and still refuses what no node could hold (too many CPUs, GPUs, memory, a
    feature no node has). SlurmdTimeout=0: nothing marks them down.
  * QOS limits are enforced only with slurmdbd: AccountingStorageEnforce=associations,limits,qos.
    An over-limit QOS request is by default left PENDING (reason QOSMaxWallDurationPerJobLimit),
    and --test-only says it would start; with Flags=DenyOnLimit on the QOS it is refused at
    submission ("Job violates accounting/QOS policy"). Every mirror QOS has DenyOnLimit.
  * The QOS, accounts and the test user's associations are made with sacctmgr before the
    slurmctld starts (it loads them when it registers) and removed afterwards. QOS are global in
    slurmdbd (not per cluster), so a QOS that exists and is not a mirror's (described
    MIRROR_MARK) is never changed, and two mirror runs are serialised by a lock (mirror_lock).
  * A site's submit-time rules (TACC refuses --mem, ARCHER2's GPU nodes refuse --ntasks, ...) are
    a generated job_submit.lua, which slurmctld also runs for --test-only.
  * sacctmgr takes 0.3-0.7 s per change (each is a slurmdbd commit), but changes of different
    clusters run side by side; so the mirrors of many sites are made together, in waves whose sites
    share no QOS name (mirror_slurm_run.py).

This module writes the files and the sacctmgr commands (pure); mirror_slurm_run.py runs them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .mirrors import Mirror, MirrorError, NodeType, Partition, Rule, seconds
from .topology import LOGIN, LOGIN_INNER_ADDR, USERS

MIRROR_MARK = "hpcnb-mirror"  # the Description of every QOS a mirror makes
USER = USERS[0]

CONF_TEXT = """\
# Site mirror of {site} (tests/testbed/testbed/mirror_slurm.py; facts: {path})
ClusterName={cluster}
SlurmctldHost={login}(127.0.0.1)
SlurmctldPort={port}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/slurmd-%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmctldLogFile={folder}/slurmctld.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
SchedulerType=sched/backfill
EnforcePartLimits=ALL
SlurmdTimeout=0
SuspendProgram=/bin/true
ResumeProgram=/bin/true
SuspendTime=600
ResumeTimeout=600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost={dbd}
AccountingStorageEnforce=associations,limits,qos
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
GresTypes=gpu
{submit_plugin}{nodes}
{partitions}
"""


def cluster_name(mirror: Mirror) -> str:
    return "mirror_" + re.sub(r"[^a-z0-9]", "_", mirror.site.lower())


def _node_line(node: NodeType) -> str:
    line = f"NodeName={node.name} NodeAddr=127.0.0.1 CPUs={node.cpus} RealMemory={node.memory_mb}"
    if node.features:
        line += " Features=" + ",".join(node.features)
    if node.gres:
        line += f" Gres={node.gres}"
    return line + " State=CLOUD"


def _partition_line(part: Partition) -> str:
    line = f"PartitionName={part.name} Nodes={','.join(part.nodes)} MaxTime={part.max_time or 'UNLIMITED'}"
    for key, values in (("AllowAccounts", part.allow_accounts), ("AllowQos", part.allow_qos)):
        if values:
            line += f" {key}={','.join(values)}"
    if part.qos:
        line += f" QOS={part.qos}"
    if part.def_mem_per_cpu:
        line += f" DefMemPerCPU={part.def_mem_per_cpu}"
    if part.default:
        line += " Default=YES"
    if part.exclusive:
        line += " OverSubscribe=EXCLUSIVE"
    return line + " State=UP"


def slurm_conf(mirror: Mirror, folder: Path, port: int) -> str:
    return CONF_TEXT.format(
        site=mirror.site, path=mirror.path.name, cluster=cluster_name(mirror), login=LOGIN.name,
        port=port, folder=folder, dbd=LOGIN_INNER_ADDR,
        submit_plugin="JobSubmitPlugins=lua\n" if mirror.rules else "",
        nodes="\n".join(_node_line(n) for n in mirror.nodes),
        partitions="\n".join(_partition_line(p) for p in mirror.partitions))


# job_submit.lua: each check answers "did the job give this?" (job_submit_lua in Slurm 22.05: unset
# numbers are NO_VAL / NO_VAL16 / NO_VAL64; --gpus, --gpus-per-node, --gres, --gpus-per-task land
# in tres_per_job / tres_per_node / tres_per_task; --exclusive sets shared = 0).
LUA_TEXT = """\
-- Site mirror of {site}: its documented submit-time rules (generated by mirror_slurm.py).
local function has(field, what) return field ~= nil and string.find(field, what, 1, true) ~= nil end
local GIVEN = {{
  mem = function(j) return j.pn_min_memory ~= slurm.NO_VAL64 end,
  ntasks = function(j) return j.num_tasks ~= slurm.NO_VAL end,
  cpus_per_task = function(j) return j.cpus_per_task ~= slurm.NO_VAL16 end,
  gpus_per_task = function(j) return has(j.tres_per_task, "gpu") end,
  account = function(j) return j.account ~= nil end,
  exclusive = function(j) return j.shared == 0 end,
  gpus = function(j)
    return has(j.tres_per_job, "gpu") or has(j.tres_per_node, "gpu") or has(j.tres_per_task, "gpu")
  end,
}}
local RULES = {{
{rules}
}}
local function broken(r, j)
  for _, name in ipairs(r.reject) do if GIVEN[name](j) then return true end end
  for _, name in ipairs(r.require) do if not GIVEN[name](j) then return true end end
  return r.min_minutes ~= nil and (j.time_limit == slurm.NO_VAL or j.time_limit < r.min_minutes)
end
function slurm_job_submit(job_desc, part_list, submit_uid)
  for _, r in ipairs(RULES) do
    if (r.partition == nil or r.partition == job_desc.partition)
        and (r.qos == nil or r.qos == job_desc.qos) and broken(r, job_desc) then
      slurm.log_user("%s", r.message)
      return slurm.ERROR
    end
  end
  return slurm.SUCCESS
end
function slurm_job_modify(job_desc, job_rec, part_list, modify_uid) return slurm.SUCCESS end
"""


def _lua_string(text: str) -> str:
    if not text.isascii():
        raise MirrorError(f"rule text must be ASCII for Lua: {text!r}")
    return json.dumps(text)  # an ASCII JSON string is a valid Lua string literal


def _lua_rule(rule: Rule) -> str:
    parts = [f"message = {_lua_string(rule.message)}",
             "reject = {" + ", ".join(map(_lua_string, rule.reject)) + "}",
             "require = {" + ", ".join(map(_lua_string, rule.require)) + "}"]
    if rule.partition:
        parts.append(f"partition = {_lua_string(rule.partition)}")
    if rule.qos:
        parts.append(f"qos = {_lua_string(rule.qos)}")
    if rule.min_time:
        parts.append(f"min_minutes = {seconds(rule.min_time) // 60}")
    return "  {" + ", ".join(parts) + "},"


def job_submit_lua(mirror: Mirror) -> str:
    return LUA_TEXT.format(site=mirror.site, rules="\n".join(_lua_rule(r) for r in mirror.rules))


def sacctmgr_setup(mirror: Mirror) -> list[str]:
    """sacctmgr commands (one per line, run with -i) that make the mirror's cluster, QOS and
    accounts: different sites' runs may go side by side (sacctmgr_user's may not)."""
    cluster = cluster_name(mirror)
    lines = [f"add cluster {cluster}"]
    for qos in mirror.qos:
        flags = ",".join(("DenyOnLimit", *qos.flags))
        line = f"add qos {qos.name} Description={MIRROR_MARK} Flags={flags}"
        if qos.max_time:
            line += f" MaxWall={qos.max_time}"
        tres = (("MaxTRESPerJob", qos.max_tres_per_job), ("MaxTRESPerUser", qos.max_tres_per_user))
        for key, value in tres:
            if value:
                line += f" {key}={value}"
        lines.append(line)
    lines.append(f"add account {','.join(mirror.accounts)} cluster={cluster} Description={MIRROR_MARK}")
    return lines


def sacctmgr_user(mirror: Mirror) -> str:
    """The sacctmgr command that gives the test user the mirror's associations. The user record is
    slurmdbd-wide: eleven of these at once (one per site) lost some sites' associations without a
    word, sacctmgr exiting 0 (CI, 2026-12-01); so they run one after another, and are checked."""
    cluster = cluster_name(mirror)
    user = f"add user {USER} account={','.join(mirror.accounts)} cluster={cluster} " \
           f"DefaultAccount={mirror.accounts[0]}"
    if mirror.qos_access:
        user += f" qos={','.join(mirror.qos_access)}"
    if mirror.default_qos:
        user += f" DefaultQOS={mirror.default_qos}"
    return user


def sacctmgr_teardown(clusters: set[str], accounts: set[str], qos: set[str]) -> list[str]:
    """What removes mirrors' accounting: the clusters first (their associations go with them; then
    nothing holds the accounts or the QOS), then the accounts, then the QOS."""
    return [f"delete {what} {','.join(sorted(names))}"
            for what, names in (("cluster", clusters), ("account", accounts), ("qos", qos)) if names]


def waves(mirrors: list[Mirror]) -> list[list[Mirror]]:
    """The mirrors in groups that may be up together. QOS and accounts are slurmdbd-wide (not per
    cluster): two sites that name the same QOS (Perlmutter's and Frontier's `debug`) or account
    (TACC's example TG-123456) are in different waves, else one's setup or teardown would change
    the other's. Greedy, in the given order. (slurmdbd keeps account names in lower case.)"""
    out: list[tuple[list[Mirror], set[str]]] = []
    for mirror in mirrors:
        names = {f"qos {q.name}" for q in mirror.qos} | {f"account {a.lower()}" for a in mirror.accounts}
        for wave, used in out:
            if not names & used:
                wave.append(mirror)
                used |= names
                break
        else:
            out.append(([mirror], set(names)))
    return [wave for wave, _ in out]
