"""A real Son of Grid Engine 8.1.9 on the testbed's hosts, beside Slurm and OpenPBS (issue 11).

login1 runs sge_qmaster (with its scheduler thread); node01 and node02 each run an sge_execd. The
facts this relies on were checked on a real install first: ../shared/gridengine/README.md ("fact N"
below) and its recipe-single-host.sh.

Installing: Debian bookworm's gridengine-client cannot be installed beside slurm-wlm-torque, which
declares "Conflicts: gridengine-client" (both ship /usr/bin/qsub, qstat, qdel): apt removes one to
install the other, whatever dpkg-divert says. So the four packages' .debs (`apt-get download`, by
.ci/run, or here when missing) are unpacked with dpkg-deb into SGE_PREFIX, once, kept across
`down` like the OpenPBS build; no maintainer script runs, so no debconf answers (fact 1), no
policy-rc.d and no daemons started by the packages. Debian built the qmaster and its spool tools
to load their spooling library from /usr/lib/gridengine (the string "/usr/lib/gridengine/%s%s" in
sge_qmaster and spooldefaults.bin; spooldefaults is a wrapper that execs
/usr/lib/gridengine/spooldefaults.bin): `up` makes that path a link to the unpacked files and
`down` removes it.

The cell (SGE_ROOT/default/common: bootstrap, act_qmaster, accounting) is on the shared file
system (fact 3); qmaster's spool, its Berkeley DB and the execds' spools sit beside it, all under
the testbed's ROOT. Each daemon runs in its host's namespaces with the host's own name (execd takes
its name from gethostname(), fact 3) and hosts file (names resolve forwards and back alike
everywhere, fact 2), with a clean environment (fact 4); its pid, from its spool, goes in the
testbed's pid files. Users reach this cluster through login1's SGE_LOGIN_PORT (conffiles.py).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .proc import TestbedError, in_host_etc, pid_file, read_pid, sh, start_daemon, wait_for
from .topology import LOGIN, NODES, SGE_CELL, SGE_DEBS, SGE_PREFIX, SGE_ROOT, Host

PACKAGES = ("gridengine-common", "gridengine-client", "gridengine-master", "gridengine-exec")
LIBEXEC = SGE_PREFIX / "usr" / "lib" / "gridengine"  # every SGE program, daemons included
SHARE = SGE_PREFIX / "usr" / "share" / "gridengine"
SYSTEM_LIBEXEC = Path("/usr/lib/gridengine")  # where Debian's build looks for libspool*.so
STAMP = SGE_PREFIX / ".hpcnb-debs-sha256"

COMMON = SGE_ROOT / SGE_CELL / "common"
QMASTER_SPOOL = SGE_ROOT / "qmaster"
SPOOL_DB = SGE_ROOT / "spooldb"
EXECD_SPOOL = SGE_ROOT / "execd"  # each execd spools in EXECD_SPOOL/<its host name>
CONF = SGE_ROOT / "conf"  # the files given to qconf -A/-M
SETUP_DONE = SGE_ROOT / "qconf-setup.done"

# Stopped in this order by `down`: the execds first (the jobs' shepherds are the namespaces' to end).
DAEMONS = (*(f"sge_execd-{n.name}" for n in NODES), "sge_qmaster")
QUEUE = "all.q"
PE = "smp"
GPU_NODE = NODES[1]
GPUS_ON_GPU_NODE = 2
# Slots per node: more than the machine's 2 cores, as Slurm's nodes claim 8 CPUs and PBS's 8 ncpus,
# so several notebooks run side by side.
SLOTS_PER_NODE = 8
MAX_H_RT = "08:00:00"  # the queue's wall-clock limit, as Slurm's gpu partition and PBS's gpu queue

# bootstrap(5) as Debian's default-bootstrap, but our paths; admin_user none: the daemons keep
# root's identity for their files (no sgeadmin account needed).
BOOTSTRAP = f"""\
# Version: 6.2
admin_user              none
default_domain          none
ignore_fqdn             true
spooling_method         berkeleydb
spooling_lib            libspoolb
spooling_params         {SPOOL_DB}
binary_path             {LIBEXEC}
qmaster_spool_dir       {QMASTER_SPOOL}
security_mode           none
listener_threads        2
worker_threads          2
scheduler_threads       1
"""

# sge_conf(5) keys changed from Debian's default-configuration.
GLOBAL_CONF = {
    "execd_spool_dir": str(EXECD_SPOOL),
    "mailer": "/bin/true",  # no mail from a test cluster
    "load_report_time": "00:00:05",  # a started execd's queue is usable within seconds
    # qdel ends every process of the job, found by the extra group id SGE gives them (sge_conf(5)),
    # not only the job's process group: Jupyter starts each kernel in a session of its own.
    "execd_params": "ENABLE_ADDGRP_KILL=true",
    # qacct knows a job about 1 s after it ends (fact 5), not 15 s.
    "reporting_params": "accounting=true reporting=false flush_time=00:00:01 joblog=false "
                        "sharelog=00:00:00",
}
# sched_conf(5): a job starts 0.2-0.3 s after qsub instead of 11-13 s (fact 5).
SCHED_CONF = {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1"}
# complex(5): a consumable per host; a job asks for it with -l gpu=N (fact 10). Consumable JOB, not
# YES: N is the job's total, as hpcnb means it; with YES (per slot, as in the recipe) `-l gpu=2 -pe
# smp 4` asks for 8 and never runs.
GPU_COMPLEX = "gpu gpu INT <= YES JOB 0 0\n"
# sge_pe(5): N slots on one host.
PE_TEXT = f"""\
pe_name            {PE}
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
"""
EXEC_HOST_TEXT = """\
hostname {name}
load_scaling NONE
complex_values {values}
user_lists NONE
xuser_lists NONE
projects NONE
xprojects NONE
usage_scaling NONE
report_variables NONE
"""
# queue_conf(5), changed from the template `qconf -sq` prints. shell /bin/bash: the queue's shell
# runs the script (its #! line is ignored, fact 9); load_thresholds NONE: 8 slots on 2 cores.
QUEUE_CONF = {"qname": QUEUE, "hostlist": " ".join(n.name for n in NODES),
              "load_thresholds": "NONE", "pe_list": PE, "slots": str(SLOTS_PER_NODE),
              "shell": "/bin/bash", "h_rt": MAX_H_RT}


# --- the programs: Debian's .debs, unpacked -----------------------------------------------------

def deb_files() -> list[Path]:
    """The packages' .debs in SGE_DEBS; `apt-get download` fetches one that is missing."""
    SGE_DEBS.mkdir(parents=True, exist_ok=True)
    debs = []
    for package in PACKAGES:
        if not list(SGE_DEBS.glob(f"{package}_*.deb")):
            proc = subprocess.run(["apt-get", "download", package], cwd=SGE_DEBS,
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise TestbedError(f"apt-get download {package} exited {proc.returncode}: "
                                   f"{proc.stderr.strip()} (.ci/run downloads it into {SGE_DEBS})")
        debs.append(sorted(SGE_DEBS.glob(f"{package}_*.deb"))[-1])
    return debs


def installed() -> bool:
    return STAMP.exists() and (LIBEXEC / "sge_qmaster").exists()


def ensure_installed() -> float | None:
    """Unpack the .debs into SGE_PREFIX unless the same ones are (by sha256); seconds taken."""
    debs = deb_files()
    digest = hashlib.sha256(b"".join(hashlib.sha256(d.read_bytes()).digest() for d in debs))
    if installed() and STAMP.read_text().strip() == digest.hexdigest():
        return None
    started = time.monotonic()
    shutil.rmtree(SGE_PREFIX, ignore_errors=True)
    for deb in debs:
        sh(["dpkg-deb", "-x", str(deb), str(SGE_PREFIX)])
    missing = [line.strip() for line in sh(["ldd", str(LIBEXEC / "sge_qmaster"),
                                            str(LIBEXEC / "sge_execd"), str(LIBEXEC / "qsub")]
                                           ).stdout.splitlines() if "not found" in line]
    if missing:
        raise TestbedError(f"Grid Engine's programs miss libraries: {'; '.join(missing)} "
                           "(.ci/run installs them)")
    STAMP.write_text(digest.hexdigest() + "\n")
    return time.monotonic() - started


def our_link() -> bool:
    return SYSTEM_LIBEXEC.is_symlink() and SYSTEM_LIBEXEC.readlink() == LIBEXEC


def link_system_libexec() -> None:
    if our_link():
        return
    if SYSTEM_LIBEXEC.exists() or SYSTEM_LIBEXEC.is_symlink():
        raise TestbedError(f"{SYSTEM_LIBEXEC} exists and is not the testbed's link to {LIBEXEC}: "
                           "Grid Engine installed by its packages? (the testbed needs the path)")
    SYSTEM_LIBEXEC.symlink_to(LIBEXEC)


# --- the cell ----------------------------------------------------------------------------------

def env() -> dict[str, str]:
    """The whole environment of a daemon or of a root command (fact 4: nothing else leaks)."""
    return {"PATH": f"{LIBEXEC}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
            "SGE_ROOT": str(SGE_ROOT), "SGE_CELL": SGE_CELL}


def changed(text: str, values: dict[str, str]) -> str:
    """A `key value` file (sge_conf, sched_conf, queue_conf) with some keys' values replaced;
    continuation lines of a replaced key go too."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        key = line.split(None, 1)[0] if line.strip() else ""
        if skipping and line[:1].isspace():
            continue
        skipping = key in values
        out.append(f"{key} {values[key]}" if skipping else line)
        skipping = skipping and line.rstrip().endswith("\\")
    missing = set(values) - {ln.split(None, 1)[0] for ln in out if ln.strip()}
    if missing:
        raise TestbedError(f"no {', '.join(sorted(missing))} in:\n{text}")
    return "\n".join(out) + "\n"


def init_cell() -> None:
    """A fresh cell as Debian's init_cluster makes one (spoolinit, spooldefaults), our paths."""
    for folder in (COMMON, QMASTER_SPOOL / "job_scripts", SPOOL_DB, EXECD_SPOOL, CONF):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
    (COMMON / "bootstrap").write_text(BOOTSTRAP)
    (COMMON / "act_qmaster").write_text(f"{LOGIN.name}\n")
    conf = CONF / "global"
    conf.write_text(changed((SHARE / "default-configuration").read_text(), GLOBAL_CONF))
    spooldefaults = str(LIBEXEC / "spooldefaults")
    for argv in ([str(LIBEXEC / "spoolinit"), "berkeleydb", "libspoolb", str(SPOOL_DB), "init"],
                 [spooldefaults, "configuration", str(conf)],
                 [spooldefaults, "complexes", str(SHARE / "util" / "resources" / "centry")],
                 [spooldefaults, "usersets", str(SHARE / "util" / "resources" / "usersets")],
                 [spooldefaults, "managers", "root"]):
        sh(argv, env=env())


def run(host: Host, argv: Sequence[str], *, check: bool = True, timeout: float = 60):
    """argv as root on the host (its name, its hosts file), as SGE's manager."""
    return sh(in_host_etc(host, argv), check=check, env=env(), timeout=timeout)


def qconf_file(option: str, name: str, text: str) -> None:
    """qconf OPTION FILE (qconf(1)); -Mconf and -Msconf want the file named after the object."""
    path = CONF / name
    path.write_text(text)
    path.chmod(0o644)
    run(LOGIN, ["qconf", option, str(path)])


def configure() -> None:
    """A site-like setup, once per fresh cell: login1 a submit host, a gpu complex on node02, the
    smp PE, all.q on both nodes, fast scheduling."""
    run(LOGIN, ["qconf", "-as", LOGIN.name])
    complexes = run(LOGIN, ["qconf", "-sc"]).stdout
    if not re.search(r"^gpu\s", complexes, re.MULTILINE):
        qconf_file("-Mc", "complex", complexes + GPU_COMPLEX)
    qconf_file("-Ap", PE, PE_TEXT)
    for node in NODES:
        values = f"gpu={GPUS_ON_GPU_NODE}" if node is GPU_NODE else "NONE"
        qconf_file("-Ae", f"host-{node.name}", EXEC_HOST_TEXT.format(name=node.name, values=values))
    qconf_file("-Aq", QUEUE, changed(run(LOGIN, ["qconf", "-sq"]).stdout, QUEUE_CONF))
    qconf_file("-Msconf", "sched_configuration",
               changed(run(LOGIN, ["qconf", "-ssconf"]).stdout, SCHED_CONF))


def qmaster_answers() -> bool:
    return run(LOGIN, ["qconf", "-sh"], check=False, timeout=20).returncode == 0


def queue_states() -> dict[str, tuple[str, str]]:
    """`qstat -f`: per queue instance (all.q@node01) its load average and state letters; a host
    whose execd has not reported yet shows load -NA- and state u (unknown)."""
    out = run(LOGIN, ["qstat", "-f"], check=False, timeout=20).stdout
    states = {}
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0].startswith(f"{QUEUE}@") and len(fields) >= 5:
            states[fields[0].split("@", 1)[1]] = (fields[3], "".join(fields[5:]))
    return states


def nodes_up() -> bool:
    states = queue_states()
    return all(states.get(n.name, ("-NA-", ""))[0] != "-NA-" and not states[n.name][1]
               for n in NODES)


def start_sge_daemon(name: str, host: Host, program: str, spool_pid: Path) -> None:
    """Start a daemon and record the pid it writes in its spool once it runs in the background.
    Not SGE_ND (no fork): execd's environment is its jobs' (sge_conf(5) INHERIT_ENV, fact 4), and
    SGE_ND=1 would be in every job's."""
    if read_pid(name):
        return
    spool_pid.unlink(missing_ok=True)
    start_daemon(name, in_host_etc(host, [str(LIBEXEC / program)]), env=env())

    def recorded() -> bool:
        try:
            pid = int(spool_pid.read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return False
        pid_file(name).write_text(f"{pid}\n")
        return read_pid(name) == pid

    wait_for(f"{program} on {host.name} to write {spool_pid}", recorded, timeout=60, interval=0.1)


def start() -> None:
    start_sge_daemon("sge_qmaster", LOGIN, "sge_qmaster", QMASTER_SPOOL / "qmaster.pid")
    wait_for("sge_qmaster to answer qconf -sh", qmaster_answers, timeout=60, interval=0.2)
    if not SETUP_DONE.exists():
        configure()
        SETUP_DONE.touch()
    for node in NODES:
        start_sge_daemon(f"sge_execd-{node.name}", node, "sge_execd",
                         EXECD_SPOOL / node.name / "execd.pid")
    wait_for("all.q on node01 and node02 reporting (qstat -f)", nodes_up, timeout=60,
             interval=0.3)


def up() -> None:
    link_system_libexec()
    if not any(read_pid(name) for name in DAEMONS):
        # Nothing of ours runs: every start is from a fresh cell (job ids start at 1: fact 11).
        shutil.rmtree(SGE_ROOT, ignore_errors=True)
        init_cell()
    start()


def down() -> None:
    """After the daemons were stopped by pid: the cell, and the link up made."""
    shutil.rmtree(SGE_ROOT, ignore_errors=True)
    if our_link():
        SYSTEM_LIBEXEC.unlink()


def processes() -> list[str]:
    """Running programs of SGE_PREFIX (daemons, shepherds), by their executable, whatever their
    command line says (sge_shepherd renames itself sge_shepherd-JOBID)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = str((proc / "exe").readlink())
        except OSError:
            continue
        if exe.startswith(f"{SGE_PREFIX}/"):
            found.append(f"{proc.name} {exe}")
    return found


def leftovers() -> list[str]:
    found = [f"folder {SGE_ROOT}"] if SGE_ROOT.exists() else []
    if our_link():
        found.append(f"link {SYSTEM_LIBEXEC}")
    return found + [f"process {p}" for p in processes()]
