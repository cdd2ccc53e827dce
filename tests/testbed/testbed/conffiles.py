"""The testbed's configuration files: slurm.conf, slurmdbd.conf and one sshd_config per host."""

from __future__ import annotations

from .topology import (
    CLUSTER_NAME,
    ETC,
    LOG,
    LOGIN,
    LOGIN_INNER_ADDR,
    NODES,
    RUN,
    SLURM_CONF,
    SPOOL,
    Host,
)

# Slurm 22.05; see slurm.conf(5). The lines marked "notes" are checked facts from TESTBED-NOTES.md.
SLURM_CONF_TEXT = """\
ClusterName={cluster}
SlurmctldHost={login}({login_addr})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={spool}/ctld
SlurmdSpoolDir={spool}/d-%n
SlurmctldPidFile={run}/slurmctld.pid
SlurmdPidFile={run}/slurmd-%n.pid
SlurmctldLogFile={log}/slurmctld.log
SlurmdLogFile={log}/slurmd-%n.log
# notes: no cgroups in namespaces started this way
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
# Jobs over a partition's MaxTime are refused at submission, not left pending (notes).
EnforcePartLimits=ALL
# Nodes claim more CPUs than the machine has, so several notebooks can run side by side.
SlurmdParameters=config_overrides
# Finished jobs leave squeue after 30 s, so tests see the sacct path (real clusters: 300 s).
MinJobAge=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost={login_addr}
JobCompType=jobcomp/none
SlurmctldTimeout=30
MessageTimeout=10
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=02:00:00 State=UP
PartitionName=gpu Nodes=ALL MaxTime=08:00:00 State=UP
"""

SLURMDBD_CONF_TEXT = """\
AuthType=auth/munge
DbdHost=localhost
DbdAddr={login_addr}
SlurmUser=root
PidFile={run}/slurmdbd.pid
LogFile={log}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
"""

SSHD_CONF_TEXT = """\
Port 22
ListenAddress {addr}
{extra_listen}HostKey {host_key}
PidFile {run}/sshd-{name}.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
X11Forwarding no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
# Users' commands find the testbed's Slurm configuration, as on a cluster where it is in /etc/slurm.
SetEnv SLURM_CONF={slurm_conf}
"""


def slurm_conf() -> str:
    nodes = "\n".join(
        f"NodeName={n.name} NodeAddr={n.addr} NodeHostname={n.name} CPUs=8 RealMemory=4000 State=UNKNOWN"
        for n in NODES
    )
    return SLURM_CONF_TEXT.format(cluster=CLUSTER_NAME, login=LOGIN.name, login_addr=LOGIN_INNER_ADDR,
                                  spool=SPOOL, run=RUN, log=LOG, nodes=nodes)


def sshd_conf_path(host: Host):
    return ETC / f"sshd_config.{host.name}"


def write_all(host_key_of) -> None:
    for folder in (ETC, RUN, LOG, SPOOL / "ctld", *(SPOOL / f"d-{n.name}" for n in NODES)):
        folder.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(slurm_conf())
    SLURM_CONF.chmod(0o644)
    dbd = ETC / "slurmdbd.conf"
    dbd.write_text(SLURMDBD_CONF_TEXT.format(login_addr=LOGIN_INNER_ADDR, run=RUN, log=LOG))
    dbd.chmod(0o600)  # slurmdbd refuses a config readable by others
    for host in (LOGIN, *NODES):
        extra = f"ListenAddress {LOGIN_INNER_ADDR}\n" if host is LOGIN else ""
        sshd_conf_path(host).write_text(SSHD_CONF_TEXT.format(
            addr=host.addr, extra_listen=extra, host_key=host_key_of(host), run=RUN, name=host.name,
            slurm_conf=SLURM_CONF))
    ETC.chmod(0o755)
