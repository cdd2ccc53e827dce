"""The testbed's configuration files: slurm.conf, slurmdbd.conf, one sshd_config per host, the gateway's
PAM service, and the laptop side's ssh_config."""

from __future__ import annotations

from pathlib import Path

from .topology import (
    CLIENT,
    CLUSTER_NAME,
    ETC,
    GATEWAY,
    GATEWAY_PAM_SERVICE,
    KNOWN_HOSTS,
    LOG,
    LOGIN,
    LOGIN2,
    LOGIN_ALIAS,
    LOGIN_INNER_ADDR,
    NODES,
    OATH_USERS,
    OPENPBS_PREFIX,
    PBS_LOGIN_PORT,
    RUN,
    SGE_CELL,
    SGE_LOGIN_PORT,
    SGE_PREFIX,
    SGE_ROOT,
    SLURM_CONF,
    SPOOL,
    SSH_CONFIG,
    USERS,
    Host,
    pbs_conf_path,
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
# Registers the gres/gpu TRES in slurmdbd at `up`: the site mirrors' QOS limits name it
# (sacctmgr refuses "no TRES known by type gres/gpu" on a fresh database otherwise).
AccountingStorageTRES=gres/gpu
GresTypes=gpu
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
{environment}"""

# Users' commands find the testbed's Slurm configuration, as on a cluster where it is in /etc/slurm.
SLURM_ENV_TEXT = "SetEnv SLURM_CONF={slurm_conf}\n"

# login1 is the login node of two clusters. Port 22 is the Slurm one, with Slurm's torque wrappers
# (/usr/bin/qsub, ...) as its PBS commands; on PBS_LOGIN_PORT the same host is the login node of the
# real OpenPBS cluster: its sessions find OpenPBS's commands first in PATH and login1's pbs.conf in
# PBS_CONF_FILE (several PBS programs otherwise read /etc/pbs.conf), and nothing else differs. hpcnb
# runs each command as argv through the user's shell (`bash -c`, not a login shell, so no profile
# resets PATH), so the session's environment is all it takes: a site's `module load pbs`, done by
# sshd for one port only. SetEnv overrides sshd's default PATH (sshd_config(5), SetEnv). A Match
# block's SetEnv replaces a global one instead of adding to it (checked: `sshd -T -C lport=2222`),
# so each port's block names all its variables and there is no global SetEnv. SGE_LOGIN_PORT is the
# same for the Grid Engine cluster: its commands first in PATH, and the cell (SGE_ROOT, SGE_CELL), as
# a site's settings.sh sets them.
LOGIN_ENV_TEXT = """\
Match LocalPort 22
    SetEnv SLURM_CONF={slurm_conf}
Match LocalPort {pbs_port}
    SetEnv SLURM_CONF={slurm_conf} PBS_CONF_FILE={pbs_conf} PATH={pbs_path}
Match LocalPort {sge_port}
    SetEnv SLURM_CONF={slurm_conf} SGE_ROOT={sge_root} SGE_CELL={sge_cell} PATH={sge_path}
"""
# Debian's OpenSSH default user PATH (its --with-default-path), after OpenPBS's or SGE's commands.
DEFAULT_USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
PBS_USER_PATH = f"{OPENPBS_PREFIX}/bin:{DEFAULT_USER_PATH}"
SGE_USER_PATH = f"{SGE_PREFIX}/usr/lib/gridengine:{DEFAULT_USER_PATH}"


# The gateway (bastion): a key AND a TOTP code, like a site with Duo or TOTP on its login nodes.
# sshd's PAM service is the name it runs under (auth-pam.c: SSHD_PAM_SERVICE is __progname), so the
# gateway's sshd runs as a link named GATEWAY_PAM_SERVICE and the system's own sshd stack is untouched.
GATEWAY_SSHD_CONF_TEXT = """\
Port 22
ListenAddress {addr}
HostKey {host_key}
PidFile {run}/sshd-{name}.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication yes
AuthenticationMethods publickey,keyboard-interactive
UsePAM yes
PermitRootLogin no
AllowTcpForwarding yes
AllowStreamLocalForwarding no
X11Forwarding no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
"""

# pam_oath(8): the prompt is "One-time password (OATH) for `USER': ". It refuses a code whose time
# step is not newer than the last one accepted (replay), so tests use each step once (testbed/totp.py).
GATEWAY_PAM_TEXT = """\
# hpcnb testbed gateway (tests/testbed/cluster): a TOTP code from pam_oath; removed by `down`.
auth     required pam_oath.so usersfile={users} window={window} digits=6
account  required pam_permit.so
session  required pam_permit.so
password required pam_deny.so
"""
TOTP_STEP = 30  # seconds; liboath 2.6 reads only T30 and T60 from its users file
# Steps either side of now that pam_oath accepts: wide, since tests log in many times a minute and
# each login takes the next unused step (testbed/totp.py), running ahead of the clock for a while.
TOTP_WINDOW = 200
PAM_FILE = Path("/etc/pam.d") / GATEWAY_PAM_SERVICE

# The laptop side's ~/.ssh/config (tests point HPCNB_SSH_CONFIG at it). First value obtained wins,
# so the specific blocks come before the `tb-*` defaults.
SSH_CONFIG_TEXT = """\
# hpcnb testbed: the laptop side's ssh config (written by tests/testbed/cluster up).
Host tb-gateway
    HostName {gateway}

Host tb-login
    HostName {login_inner}
    ProxyJump tb-gateway

Host tb-node01
    HostName {node01}

# Two jumps: gateway, then node01, then login1's inner address.
Host tb-login-chain
    HostName {login_inner}
    ProxyJump tb-gateway,tb-node01

# No gateway: login1's outer address through a ProxyCommand.
Host tb-login-pc
    HostName {login_outer}
    ProxyCommand socat - TCP:%h:%p

# The round-robin name of login2 and login1 (topology.LOGIN_ALIAS): a login node that stops
# answering is left after 5 s x 2 (ServerAliveInterval x ServerAliveCountMax), not 30 s x 3.
Host {login_alias}
    ServerAliveInterval 5
    ServerAliveCountMax 2

Host tb-*
    User {user}
    IdentityFile {identity}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    ServerAliveInterval 15
"""


def ssh_config_text() -> str:
    return SSH_CONFIG_TEXT.format(
        gateway=GATEWAY.addr, login_inner=LOGIN_INNER_ADDR, login_outer=LOGIN.addr,
        node01=NODES[0].addr, login_alias=LOGIN_ALIAS, user=USERS[0],
        identity=CLIENT / f"id_ed25519_{USERS[0]}", known_hosts=KNOWN_HOSTS)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Replace a file others may be reading (concurrent test runs) without an empty moment.
    True when its text changed."""
    if path.exists() and path.read_text() == text:
        path.chmod(mode)
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def write_gateway(host_key_of) -> None:
    """The gateway's sshd_config and PAM service, and the laptop side's ssh_config."""
    write_atomic(sshd_conf_path(GATEWAY), GATEWAY_SSHD_CONF_TEXT.format(
        addr=GATEWAY.addr, host_key=host_key_of(GATEWAY), run=RUN, name=GATEWAY.name))
    write_atomic(PAM_FILE, GATEWAY_PAM_TEXT.format(users=OATH_USERS, window=TOTP_WINDOW))
    write_atomic(SSH_CONFIG, ssh_config_text(), 0o600)


def slurm_conf() -> str:
    nodes = "\n".join(
        f"NodeName={n.name} NodeAddr={n.addr} NodeHostname={n.name} CPUs=8 RealMemory=4000 State=UNKNOWN"
        for n in NODES
    )
    return SLURM_CONF_TEXT.format(cluster=CLUSTER_NAME, login=LOGIN.name, login_addr=LOGIN_INNER_ADDR,
                                  spool=SPOOL, run=RUN, log=LOG, nodes=nodes)


def sshd_conf_text(host: Host, host_key: Path) -> str:
    if host is LOGIN:
        # Port 22, PBS_LOGIN_PORT and SGE_LOGIN_PORT, on both of login1's addresses.
        extra = (f"Port {PBS_LOGIN_PORT}\nPort {SGE_LOGIN_PORT}\n"
                 f"ListenAddress {LOGIN_INNER_ADDR}\n")
        environment = LOGIN_ENV_TEXT.format(
            slurm_conf=SLURM_CONF, pbs_port=PBS_LOGIN_PORT, pbs_conf=pbs_conf_path(LOGIN),
            pbs_path=PBS_USER_PATH, sge_port=SGE_LOGIN_PORT, sge_root=SGE_ROOT, sge_cell=SGE_CELL,
            sge_path=SGE_USER_PATH)
    else:
        extra, environment = "", SLURM_ENV_TEXT.format(slurm_conf=SLURM_CONF)
    return SSHD_CONF_TEXT.format(addr=host.addr, extra_listen=extra, host_key=host_key, run=RUN,
                                 name=host.name, environment=environment)


def sshd_conf_path(host: Host):
    return ETC / f"sshd_config.{host.name}"


def write_all(host_key_of) -> set[str]:
    """Every configuration file; the names of the hosts whose sshd_config changed."""
    for folder in (ETC, RUN, LOG, SPOOL / "ctld", *(SPOOL / f"d-{n.name}" for n in NODES)):
        folder.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(slurm_conf())
    SLURM_CONF.chmod(0o644)
    dbd = ETC / "slurmdbd.conf"
    dbd.write_text(SLURMDBD_CONF_TEXT.format(login_addr=LOGIN_INNER_ADDR, run=RUN, log=LOG))
    dbd.chmod(0o600)  # slurmdbd refuses a config readable by others
    changed = {host.name for host in (LOGIN, LOGIN2, *NODES)
               if write_atomic(sshd_conf_path(host), sshd_conf_text(host, host_key_of(host)))}
    write_gateway(host_key_of)
    ETC.chmod(0o755)
    return changed
