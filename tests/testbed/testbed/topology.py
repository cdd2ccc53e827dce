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

CLUSTER_NAME = "hpcnbtb"
USERS = ("hpcuser", "hpcuser2")  # ordinary users; the first submits the tests' jobs

# The laptop side is the default namespace. It has a veth link to login1 only: it has no route to the
# compute hosts, which sit on a bridge inside login1's namespace (login1 does not forward packets).
TESTBED_NET = "10.213.0.0/16"
LAPTOP_IF = "hpcnb-lap"
LAPTOP_ADDR = "10.213.0.1"
LOGIN_OUTER_ADDR = "10.213.0.2"  # what the laptop connects to
LOGIN_INNER_ADDR = "10.213.1.1"  # what the nodes see (slurmctld, slurmdbd)


@dataclass(frozen=True)
class Host:
    name: str
    addr: str  # the address others use to reach it
    role: str  # "login" or "compute"


LOGIN = Host("login1", LOGIN_OUTER_ADDR, "login")
NODES = (Host("node01", "10.213.1.11", "compute"), Host("node02", "10.213.1.12", "compute"))
HOSTS = (LOGIN, *NODES)


def netns_path(host: Host) -> str:
    return f"/run/netns/{host.name}"
