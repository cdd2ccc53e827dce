"""A real OpenPBS cluster on the testbed's hosts, beside Slurm (issue 11).

login1 runs pbs_server (with its PostgreSQL datastore), pbs_sched and pbs_comm; node01 and node02
each run a pbs_mom. Each host has its own pbs.conf and PBS_HOME under PBS_ROOT (they share one file
system, pitfall 3 of ../shared/openpbs/README.md), and every daemon and command gets PBS_CONF_FILE.
The build is openpbs_build.py's; users reach this cluster through login1's port PBS_LOGIN_PORT
(conffiles.py), whose sessions have OpenPBS first in PATH, while port 22 keeps Slurm's torque
wrappers (pitfall 2).

Daemons run in the foreground (-N: pbsd_main.c, mom_main.c, pbs_sched_utils.cpp, pbs_comm.c), so
the testbed's pid files name them; pbs_server starts PostgreSQL itself (db_common.c
pbs_dataservice_control: pbs_ds_monitor, then pg_ctl), and those two pids are read from the
datastore's own files once it runs, so `down` stops them by pid too.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence

from .openpbs_build import BUILD_PATH, OPENPBS_VERSION
from .proc import TestbedError, in_host_etc, pid_file, read_pid, sh, start_daemon, wait_for
from .topology import (
    LOGIN,
    NODES,
    OPENPBS_PREFIX,
    OPENPBS_TMP,
    PBS_ROOT,
    Host,
    pbs_conf_path,
    pbs_home,
)

# Stopped in this order by `down`: the MoMs (and their jobs) first, the datastore last.
DAEMONS = (*(f"pbs_mom-{n.name}" for n in NODES), "pbs_sched", "pbs_server", "pbs_comm",
           "pbs-postgres", "pbs-ds-monitor")
GPU_NODE = NODES[1]
GPUS_ON_GPU_NODE = 2
# What each node offers the scheduler: more than the machine's 2 cores, as Slurm's nodes claim 8,
# so several notebooks run side by side (MoM reports hwloc's count; the server's value wins).
NCPUS_PER_NODE = 8

CONF_TEXT = """\
PBS_EXEC={prefix}
PBS_HOME={home}
PBS_SERVER={server}
PBS_START_SERVER={server_daemons}
PBS_START_SCHED={server_daemons}
PBS_START_COMM={server_daemons}
PBS_START_MOM={mom}
PBS_CORE_LIMIT=unlimited
PBS_SCP=/usr/bin/scp
PBS_TMPDIR={tmp}
"""
# A node's MoM and TPP leaf are known by the node's name (pbs.conf(5): PBS_MOM_NODE_NAME,
# PBS_LEAF_NAME); the server creates the vnode under that name.
NODE_CONF_EXTRA = "PBS_MOM_NODE_NAME={name}\nPBS_LEAF_NAME={name}\n"

# pbs_mom's config (PBS Admin Guide, "MoM Parameters"): the home is shared, so output files are
# copied with cp, not pbs_rcp/scp, to any path on any host.
MOM_CONFIG = "$clienthost {server}\n$usecp *:/ /\n"

# The site-like setup, once per fresh datastore (qmgr(8B)). ngpus is host-level and consumable
# (flag=nh), set on node02 only; the scheduler must list it in sched_config's resources to honour it.
QMGR_SETUP = (
    "create resource ngpus type=long, flag=nh",
    "set server job_history_enable = True",
    # Default 600 s: a job submitted before a MoM registers would wait that long (pitfall 7).
    "set server scheduler_iteration = 5",
    "set queue workq resources_max.walltime = 02:00:00",
    "set queue workq resources_default.walltime = 01:00:00",
    "create queue gpu queue_type = execution, enabled = true, started = true",
    "set queue gpu resources_max.walltime = 08:00:00",
    "set queue gpu resources_default.walltime = 01:00:00",
    *(f"create node {n.name}" for n in NODES),
    *(f"set node {n.name} resources_available.ncpus = {NCPUS_PER_NODE}" for n in NODES),
    f"set node {GPU_NODE.name} resources_available.ngpus = {GPUS_ON_GPU_NODE}",
)
SETUP_DONE = PBS_ROOT / LOGIN.name / "qmgr-setup.done"


def env(host: Host) -> dict[str, str]:
    """A daemon's or root command's whole environment: PBS first in PATH, the host's pbs.conf."""
    return {"PATH": f"{OPENPBS_PREFIX}/bin:{OPENPBS_PREFIX}/sbin:{BUILD_PATH}", "HOME": "/root",
            "LANG": "C.UTF-8", "PBS_CONF_FILE": str(pbs_conf_path(host))}


def run(host: Host, argv: Sequence[str], *, check: bool = True, timeout: float = 60,
        input: str | None = None):
    """argv as root on the host, with its hosts file (PBS names resolve as on a cluster)."""
    return sh(in_host_etc(host, argv), check=check, env=env(host), timeout=timeout, input=input)


def write_confs() -> None:
    PBS_ROOT.mkdir(parents=True, exist_ok=True)
    OPENPBS_TMP.mkdir(exist_ok=True)
    OPENPBS_TMP.chmod(0o1777)  # qsub as the user writes its temporary script here (pitfall 5)
    for host in (LOGIN, *NODES):
        conf = pbs_conf_path(host)
        conf.parent.mkdir(exist_ok=True)
        text = CONF_TEXT.format(prefix=OPENPBS_PREFIX, home=pbs_home(host), server=LOGIN.name,
                                server_daemons=int(host is LOGIN), mom=int(host is not LOGIN),
                                tmp=OPENPBS_TMP)
        if host is not LOGIN:
            text += NODE_CONF_EXTRA.format(name=host.name)
        conf.write_text(text)
        conf.chmod(0o644)


def init_homes() -> None:
    """PBS_HOME for each host, as PBS's own scripts make it (pbs_habitat: initdb of the datastore
    as user postgres, `pbs_server -t create`, queue workq; pbs_postinstall for the MoMs)."""
    home = pbs_home(LOGIN)
    if not (home / "datastore" / "PG_VERSION").exists():
        run(LOGIN, [f"{OPENPBS_PREFIX}/libexec/pbs_habitat"], timeout=300)
        config = home / "sched_priv" / "sched_config"
        text = config.read_text()
        if "ngpus" not in text:
            config.write_text(re.sub(r'^(resources: ".*)"$', r'\1, ngpus"', text, count=1,
                                     flags=re.MULTILINE))
    for node in NODES:
        mom_config = pbs_home(node) / "mom_priv" / "config"
        if not mom_config.exists() or "$usecp" not in mom_config.read_text():
            run(node, [f"{OPENPBS_PREFIX}/libexec/pbs_postinstall", "execution", OPENPBS_VERSION,
                       str(OPENPBS_PREFIX), str(pbs_home(node)), "sameconf"])
            mom_config.write_text(MOM_CONFIG.format(server=LOGIN.name))
            mom_config.chmod(0o644)


def sbin(program: str) -> str:
    """By full path, so that `leftovers` finds it by its command line."""
    return f"{OPENPBS_PREFIX}/sbin/{program}"


def start() -> None:
    """Daemons in pbs_init.d's order (comm, MoMs, scheduler, server), then the server's setup."""
    start_daemon("pbs_comm", in_host_etc(LOGIN, [sbin("pbs_comm"), "-N"]), env=env(LOGIN))
    for node in NODES:
        start_daemon(f"pbs_mom-{node.name}", in_host_etc(node, [sbin("pbs_mom"), "-N"]),
                     env=env(node))
    start_daemon("pbs_sched", in_host_etc(LOGIN, [sbin("pbs_sched"), "-N"]), env=env(LOGIN))
    start_daemon("pbs_server", in_host_etc(LOGIN, [sbin("pbs_server"), "-N"]), env=env(LOGIN))
    wait_for("pbs_server to answer qstat -B", server_answers, timeout=90, interval=0.3)
    record_datastore_pids()
    if not SETUP_DONE.exists():
        qmgr(QMGR_SETUP)
        SETUP_DONE.touch()
    wait_for("node01 and node02 free in pbsnodes -a", nodes_up, timeout=90, interval=0.3)


def server_answers() -> bool:
    return run(LOGIN, ["qstat", "-B"], check=False).returncode == 0


def qmgr(lines: Sequence[str]) -> None:
    """qmgr directives in one run. Reading stdin, qmgr goes on after an error and exits 0, so its
    stderr is the verdict; objects that already exist (a setup interrupted earlier) are fine."""
    proc = run(LOGIN, ["qmgr"], check=False, input="".join(f"{line}\n" for line in lines))
    errors = [line for line in proc.stderr.splitlines() if "already exists" not in line
              and not re.fullmatch(r"qmgr: Error \(\d+\) returned from server", line)]
    if proc.returncode != 0 or errors:
        raise TestbedError(f"qmgr exited {proc.returncode}: {' / '.join(errors)}")


def node_states() -> dict[str, str]:
    """`pbsnodes -a`: a block per node, its name alone on a line, then `state = free` (pbsnodes(8B))."""
    out = run(LOGIN, ["pbsnodes", "-a"], check=False).stdout
    states: dict[str, str] = {}
    name = None
    for line in out.splitlines():
        if line and not line[0].isspace():
            name = line.strip()
        elif name and line.strip().startswith("state = "):
            states[name] = line.split("=", 1)[1].strip()
    return states


# A node that runs jobs is up too (an `up` while the tests run); a fresh one is free.
UP_STATES = frozenset({"free", "job-busy", "job-exclusive"})


def nodes_up() -> bool:
    states = node_states()
    return all(states.get(n.name) in UP_STATES for n in NODES)


def record_datastore_pids() -> None:
    """PostgreSQL's postmaster pid (first line of postmaster.pid) and pbs_ds_monitor's (it writes
    "host:pid" into datastore/pbs_dblock: pbs_ds_monitor.c lock_out)."""
    datastore = pbs_home(LOGIN) / "datastore"

    def found() -> bool:
        try:
            postmaster = int((datastore / "postmaster.pid").read_text().split()[0])
            monitor = int((datastore / "pbs_dblock").read_text().strip().rsplit(":", 1)[1])
        except (FileNotFoundError, IndexError, ValueError):
            return False
        pid_file("pbs-postgres").write_text(f"{postmaster}\n")
        pid_file("pbs-ds-monitor").write_text(f"{monitor}\n")
        return bool(read_pid("pbs-postgres") and read_pid("pbs-ds-monitor"))

    wait_for("the PBS datastore's postgres and pbs_ds_monitor", found, timeout=30, interval=0.2)


def up() -> None:
    if not any(read_pid(name) for name in DAEMONS):
        # Nothing of ours runs: files left by a `down` that did not know them (an older testbed)
        # or an interrupted `up` are not reused; every start is from a fresh datastore.
        shutil.rmtree(PBS_ROOT, ignore_errors=True)
    write_confs()
    init_homes()
    start()


def down() -> None:
    """After the daemons were stopped by pid: their files, datastore included."""
    shutil.rmtree(PBS_ROOT, ignore_errors=True)


def leftovers() -> list[str]:
    """The run-time folder, and any process still running OpenPBS or its datastore."""
    found = [f"folder {PBS_ROOT}"] if PBS_ROOT.exists() else []
    out = sh(["pgrep", "-a", "-f", f"{OPENPBS_PREFIX}/|{PBS_ROOT}/"], check=False).stdout
    return found + [f"process {line}" for line in out.splitlines()]
