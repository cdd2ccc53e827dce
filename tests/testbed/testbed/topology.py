"""Names, addresses and paths of the testbed: the one place they are written down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Everything the testbed makes lives here and goes away on `down`.
ROOT = Path("/var/tmp/hpcnb-testbed")
ETC = ROOT / "etc"
RUN = ROOT / "run"
LOG = ROOT / "log"
SPOOL = ROOT / "spool"
HOSTKEYS = ROOT / "hostkeys"
CLIENT = ROOT / "client"  # the laptop side's identity files and known_hosts
PIDS = ROOT / "pids"
MYSQL_DATA = ROOT / "mysql"

SLURM_CONF = ETC / "slurm.conf"
KNOWN_HOSTS = CLIENT / "known_hosts"

# Kept across up/down (installing JupyterLab takes far longer than the rest of `up`).
VENV = Path("/opt/hpcnb-testbed/venv")
# JupyterLab's wheels, for `hpcnb jupyter install` on a testbed cluster whose nodes have no
# Jupyter: the testbed's hosts reach no package index, as many compute nodes do not.
WHEELS = Path("/opt/hpcnb-testbed/wheels")

CLUSTER_NAME = "hpcnbtb"
USERS = ("hpcuser", "hpcuser2")  # ordinary users; the first submits the tests' jobs

# The laptop side is the default namespace. It has a veth link to login1 only: it has no route to the
# compute hosts, which sit on a bridge inside login1's namespace (login1 does not forward packets).
TESTBED_NET = "10.213.0.0/16"
LAPTOP_IF = "hpcnb-lap"
LAPTOP_ADDR = "10.213.0.1"
LOGIN_OUTER_ADDR = "10.213.0.2"  # what the laptop connects to
LOGIN_INNER_ADDR = "10.213.1.1"  # what the nodes see (slurmctld, slurmdbd)

# The SSH gateway (bastion): the laptop reaches it over its own veth link; it sits on login1's bridge
# and asks for a key AND a TOTP code (PAM pam_oath). Through it the laptop reaches login1's inner
# address, to which the laptop itself has no route.
GATEWAY_IF = "hpcnb-gw"
GATEWAY_LAPTOP_ADDR = "10.213.2.1"
GATEWAY_ADDR = "10.213.2.2"  # what the laptop connects to
GATEWAY_INNER_ADDR = "10.213.1.2"  # on login1's bridge
GATEWAY_PAM_SERVICE = "hpcnb-tb-gateway"  # sshd's PAM service is the name it runs under
OATH_USERS = ETC / "users.oath"  # what pam_oath reads (and writes: it records the last code used)
TOTP_SECRETS = CLIENT / "totp"  # the laptop side's copy of each user's TOTP secret (hex), per user
# login2 (issue 16): a second login node, on login1's bridge like the gateway, with its own link to the
# laptop and its own host key. Both login nodes are behind LOGIN_ALIAS, a name the laptop resolves to
# both outer addresses (a block in the machine's /etc/hosts, removed by `down`), as a site's
# round-robin DNS name is. `.test` is reserved (RFC 2606): it resolves nowhere else.
LOGIN2_IF = "hpcnb-lap2"
LOGIN2_LAPTOP_ADDR = "10.213.3.1"
LOGIN2_ADDR = "10.213.3.2"  # what the laptop connects to
LOGIN2_INNER_ADDR = "10.213.1.3"  # on login1's bridge: slurmctld, slurmdbd, the nodes
LOGIN_ALIAS = "login.hpcnbtb.test"
LAPTOP_HOSTS = Path("/etc/hosts")
SSH_CONFIG = CLIENT / "ssh_config"  # an ~/.ssh/config for the laptop side: tb-gateway, tb-login, ...
BIN = ROOT / "bin"


@dataclass(frozen=True)
class Host:
    name: str
    addr: str  # the address others use to reach it
    role: str  # "login", "compute" or "gateway"
    cluster_addr: str = ""  # the address the cluster's hosts know it by, when not `addr`


LOGIN = Host("login1", LOGIN_OUTER_ADDR, "login")
LOGIN2 = Host("login2", LOGIN2_ADDR, "login", LOGIN2_INNER_ADDR)
NODES = (Host("node01", "10.213.1.11", "compute"), Host("node02", "10.213.1.12", "compute"))
GATEWAY = Host("gateway", GATEWAY_ADDR, "gateway", GATEWAY_INNER_ADDR)
HOSTS = (LOGIN, LOGIN2, *NODES, GATEWAY)


def key_names(host: Host) -> list[str]:
    """The names the laptop may know a host's key under (login1 also by its inner address, which the
    laptop reaches through the gateway, and as the OpenPBS and Grid Engine clusters' login ports).
    Both login nodes' keys are listed under LOGIN_ALIAS, as a user of a round-robin name has them."""
    extra = {LOGIN.name: [LOGIN_INNER_ADDR, f"[{LOGIN.addr}]:{PBS_LOGIN_PORT}",
                          f"[{LOGIN.addr}]:{SGE_LOGIN_PORT}", LOGIN_ALIAS],
             LOGIN2.name: [LOGIN_ALIAS]}.get(host.name, [])
    return [host.name, host.addr, *extra]


def netns_path(host: Host) -> str:
    return f"/run/netns/{host.name}"


# --- OpenPBS (issue 11): a second, real PBS cluster on the same hosts, beside Slurm ---------------
# The build is kept across up/down (tests/testbed/testbed/openpbs_build.py).
OPENPBS_PREFIX = Path("/opt/hpcnb-testbed/openpbs")
OPENPBS_BUILD_LOG = Path("/opt/hpcnb-testbed/openpbs-build.log")
# Its run-time files (each host's pbs.conf and PBS_HOME, the datastore), removed by `down`. Not under
# ROOT: pbs_server refuses a PBS_HOME below a directory others may write to, such as /var/tmp
# ("Security violation ... resolves to /var/tmp": src/lib/Liblog/chk_file_sec.c, teststat).
PBS_ROOT = Path("/var/spool/hpcnb-testbed-pbs")
# PBS_TMPDIR: qsub, run as the user, writes its copy of the script here (mode 1777, pitfall 5).
OPENPBS_TMP = PBS_ROOT / "tmp"
# login1's sshd also listens here; sessions on this port see real PBS first in PATH, and
# PBS_CONF_FILE (conffiles.py, "Match LocalPort"). Port 22 keeps Slurm's torque wrappers.
PBS_LOGIN_PORT = 2222


def pbs_conf_path(host: Host) -> Path:
    """Each host its own pbs.conf: they share one file system (pitfall 3)."""
    return PBS_ROOT / host.name / "pbs.conf"


def pbs_home(host: Host) -> Path:
    return PBS_ROOT / host.name / "home"


# --- Grid Engine (issue 11): Son of Grid Engine 8.1.9 from Debian's packages, beside Slurm and PBS ---
# Debian's gridengine-client cannot be installed beside slurm-wlm-torque (it declares "Conflicts:
# gridengine-client"), so the packages' files are unpacked here, once, and kept across up/down
# (tests/testbed/testbed/sge.py). The .debs themselves come from `apt-get download` (.ci/run).
SGE_DEBS = Path("/opt/hpcnb-testbed/gridengine-debs")
SGE_PREFIX = Path("/opt/hpcnb-testbed/gridengine")
# code-server from the npm registry, for `--app code-server` (testbed/code_server.py)
CODE_SERVER_PREFIX = Path("/opt/hpcnb-testbed/code-server")
# The cell: $SGE_ROOT/default/common (bootstrap, act_qmaster, accounting) is shared by all hosts, as
# on a cluster (../shared/gridengine/README.md fact 3); qmaster's spool and each execd's are here too.
SGE_ROOT = ROOT / "sge"
SGE_CELL = "default"
# login1's sshd also listens here; sessions on this port see Grid Engine's commands first in PATH,
# and SGE_ROOT/SGE_CELL (conffiles.py, "Match LocalPort"): /usr/bin/q* are Slurm's torque wrappers.
SGE_LOGIN_PORT = 2223
