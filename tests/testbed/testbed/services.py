"""The daemons: munge, MariaDB + slurmdbd, slurmctld on login1, slurmd on the nodes, OpenPBS
(openpbs.py), Grid Engine (sge.py), sshd everywhere."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
from pathlib import Path

from . import conffiles, openpbs, sge
from .accounts import host_key
from .proc import TestbedError, in_host, in_host_etc, read_pid, sh, start_daemon, wait_for
from .topology import (
    BIN,
    GATEWAY,
    GATEWAY_PAM_SERVICE,
    LOG,
    LOGIN,
    LOGIN2,
    MYSQL_DATA,
    NODES,
    PBS_LOGIN_PORT,
    SGE_LOGIN_PORT,
    SLURM_CONF,
    Host,
)

MYSQL_SOCKET = Path("/run/mysqld/mysqld.sock")


def slurm_env() -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(SLURM_CONF)}


def start_munge() -> None:
    """munged is shared by all hosts through its socket on the shared file system."""
    if sh(["sh", "-c", "munge -n | unmunge"], check=False).returncode == 0:
        return
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    munge = pwd.getpwnam("munge")
    os.chown(run_dir, munge.pw_uid, munge.pw_gid)
    if not Path("/etc/munge/munge.key").exists():
        sh(["mungekey", "--create"])
        os.chown("/etc/munge/munge.key", munge.pw_uid, munge.pw_gid)
    start_daemon("munged", ["runuser", "-u", "munge", "--", "munged", "--foreground", "--force"])
    wait_for("munged", lambda: sh(["sh", "-c", "munge -n | unmunge"], check=False).returncode == 0)


def start_mariadb() -> None:
    if read_pid("mariadb"):
        return
    if not (MYSQL_DATA / "mysql").exists():
        MYSQL_DATA.mkdir(parents=True, exist_ok=True)
        shutil.chown(MYSQL_DATA, "mysql", "mysql")
        sh(["mariadb-install-db", "--user=mysql", f"--datadir={MYSQL_DATA}", "--skip-test-db",
            "--auth-root-authentication-method=socket"], timeout=120)
    MYSQL_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(MYSQL_SOCKET.parent, "mysql", "mysql")
    start_daemon("mariadb", in_host(LOGIN, [
        "mariadbd", "--user=mysql", f"--datadir={MYSQL_DATA}", f"--socket={MYSQL_SOCKET}",
        "--skip-networking", f"--log-error={LOG}/mariadb.log", "--innodb-buffer-pool-size=32M",
    ]))
    wait_for("mariadb socket", MYSQL_SOCKET.exists, timeout=60)


def start_slurmdbd() -> None:
    start_daemon("slurmdbd", in_host(LOGIN, ["slurmdbd", "-D"]),
                 env=slurm_env())

    def registered() -> bool:
        out = sh(["nsenter", f"--net=/run/netns/{LOGIN.name}", "sacctmgr", "-n", "-P", "list",
                  "cluster", "format=cluster"], check=False, env=slurm_env())
        if out.returncode != 0:
            return False
        if "hpcnbtb" not in out.stdout.split():
            sh(["nsenter", f"--net=/run/netns/{LOGIN.name}", "sacctmgr", "-i", "add", "cluster",
                "hpcnbtb"], check=False, env=slurm_env())
            return False
        return True

    wait_for("slurmdbd and the cluster's record", registered, timeout=60, interval=0.5)


def start_slurm() -> None:
    start_daemon("slurmctld", in_host(LOGIN, ["slurmctld", "-D", "-i"]), env=slurm_env())
    for node in NODES:
        start_daemon(f"slurmd-{node.name}", in_host(node, ["slurmd", "-D", "-N", node.name]),
                     env=slurm_env())

    def nodes_idle() -> bool:
        out = sh(["nsenter", f"--net=/run/netns/{LOGIN.name}", "sinfo", "-h", "-N", "-o", "%N %t"],
                 check=False, env=slurm_env())
        states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
        return all(states.get(n.name, "").rstrip("*") in {"idle", "mix", "alloc"} for n in NODES)

    wait_for("node01 and node02 idle in sinfo", nodes_idle, timeout=60, interval=0.3)

    def gpu_tres_known() -> bool:  # slurm.conf's AccountingStorageTRES, registered by slurmctld
        out = sh(["nsenter", f"--net=/run/netns/{LOGIN.name}", "sacctmgr", "-n", "-P", "show", "tres"],
                 check=False, env=slurm_env())
        return "gres|gpu" in out.stdout

    wait_for("the gres/gpu TRES in slurmdbd", gpu_tres_known, timeout=60, interval=0.5)


def sshd_binary(host: Host) -> str:
    """/usr/sbin/sshd, or for the gateway a link to it whose name is the PAM service it uses."""
    if host is not GATEWAY:
        return "/usr/sbin/sshd"
    BIN.mkdir(parents=True, exist_ok=True)
    link = BIN / GATEWAY_PAM_SERVICE
    if not link.is_symlink():
        link.symlink_to("/usr/sbin/sshd")
    return str(link)


def start_sshd(host: Host, *, config_changed: bool = False) -> None:
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    conf = conffiles.sshd_conf_path(host)
    sshd = sshd_binary(host)
    sh([sshd, "-t", "-f", str(conf)])
    running = read_pid(f"sshd-{host.name}")
    if running and config_changed:
        # A testbed brought up by an older `up` (login1 without PBS_LOGIN_PORT): sshd re-executes
        # itself with the new file on SIGHUP, keeping its pid (sshd(8), SIGHUP).
        os.kill(running, signal.SIGHUP)
    # Sessions on the host resolve the testbed's names, as on a cluster (the torque wrappers and
    # OpenPBS need it): in_host_etc.
    start_daemon(f"sshd-{host.name}", in_host_etc(
        host, [sshd, "-D", "-f", str(conf), "-E", str(LOG / f"sshd-{host.name}.log")]))


def wait_for_sshd(host: Host) -> None:
    ports = (22, PBS_LOGIN_PORT, SGE_LOGIN_PORT) if host is LOGIN else (22,)

    def answers() -> bool:
        argv = ["nsenter", f"--net=/run/netns/{host.name}", "python3", "-c",
                "import socket,sys\nfor port in sys.argv[2:]:\n"
                " s=socket.create_connection((sys.argv[1],int(port)),1)\n"
                " assert s.recv(4)==b'SSH-'", host.addr, *map(str, ports)]
        return sh(argv, check=False).returncode == 0

    wait_for(f"sshd on {host.name} (ports {', '.join(map(str, ports))})", answers, timeout=30)


def start_all() -> None:
    changed = conffiles.write_all(host_key)
    start_munge()
    start_mariadb()
    start_slurmdbd()
    start_slurm()
    openpbs.up()
    sge.up()
    for host in (LOGIN, LOGIN2, *NODES, GATEWAY):
        start_sshd(host, config_changed=host.name in changed)
    for host in (LOGIN, LOGIN2, *NODES, GATEWAY):
        wait_for_sshd(host)


def laptop_reaches_login() -> bool:
    try:
        with socket.create_connection((LOGIN.addr, 22), timeout=2) as s:
            return s.recv(4) == b"SSH-"
    except OSError:
        return False


def check_laptop_view() -> None:
    if not laptop_reaches_login():
        raise TestbedError(f"the laptop side cannot reach login1's sshd at {LOGIN.addr}:22")
