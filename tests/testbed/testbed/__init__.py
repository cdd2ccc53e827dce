"""The testbed's `up`, `down` and `status` (see tests/testbed/cluster)."""

from __future__ import annotations

import os
import shutil
import time

from . import accounts, code_server, conffiles, net, openpbs, openpbs_build, services, sge
from .proc import TestbedError, read_pid, stop_pid
from .topology import CODE_SERVER_PREFIX, HOSTS, NODES, OPENPBS_PREFIX, PIDS, ROOT, SGE_PREFIX

# Stopped in this order: the entry points first, the databases last.
DAEMONS = ("sshd-gateway", "sshd-login1", "sshd-login2", *(f"sshd-{n.name}" for n in NODES), *sge.DAEMONS,
           *openpbs.DAEMONS,
           *(f"slurmd-{n.name}" for n in NODES), "slurmctld", "slurmdbd", "mariadb", "munged")


def up() -> None:
    started = time.monotonic()
    ROOT.mkdir(parents=True, exist_ok=True)
    ROOT.chmod(0o755)
    accounts.ensure_users()
    accounts.ensure_client_keys()
    accounts.ensure_host_keys()
    accounts.ensure_totp()
    accounts.ensure_venv()
    accounts.ensure_wheels()
    build_s = openpbs_build.ensure_built()
    if build_s is not None:
        print(f"openpbs: built in {build_s:.0f} s")
    unpack_s = sge.ensure_installed()
    if unpack_s is not None:
        print(f"gridengine: unpacked in {unpack_s:.1f} s")
    install_s = code_server.ensure_installed()
    if install_s is not None:
        print(f"code-server: installed in {install_s:.0f} s")
    net.up()
    services.start_all()
    services.check_laptop_view()
    print(f"testbed up in {time.monotonic() - started:.1f} s")


def down() -> None:
    for name in DAEMONS:
        pid = read_pid(name)
        if pid:
            stop_pid(pid)
    # Whatever else runs in the hosts' namespaces (jobs, their notebooks, sshd sessions) goes too.
    for host in HOSTS:
        for pid in net.pids_in(host):
            stop_pid(pid, grace=2.0)
    net.down()
    openpbs.down()
    sge.down()
    conffiles.PAM_FILE.unlink(missing_ok=True)
    shutil.rmtree(ROOT, ignore_errors=True)
    left = leftovers()
    if left:
        raise TestbedError("down left: " + ", ".join(left))
    print("testbed down")


def leftovers() -> list[str]:
    found = net.leftovers() + openpbs.leftovers() + sge.leftovers()
    if conffiles.PAM_FILE.exists():
        found.append(f"file {conffiles.PAM_FILE}")
    if PIDS.exists():
        found += [f"daemon {name}" for name in DAEMONS if read_pid(name)]
    return found


def status() -> int:
    running = [name for name in DAEMONS if read_pid(name)]
    for name in DAEMONS:
        pid = read_pid(name)
        print(f"{name:16} {'running, pid ' + str(pid) if pid else 'stopped'}")
    for item in net.leftovers():
        print(f"{item:16} present")
    if conffiles.PAM_FILE.exists():
        print(f"pam service      {conffiles.PAM_FILE.name}")
    print(f"venv             {'ready' if accounts.venv_ready() else 'missing'}")
    print(f"openpbs build    {'ready' if openpbs_build.built() else 'missing'} ({OPENPBS_PREFIX})")
    print(f"gridengine       {'ready' if sge.installed() else 'missing'} ({SGE_PREFIX})")
    print(f"code-server      {'ready' if code_server.installed() else 'missing'} ({CODE_SERVER_PREFIX})")
    return 0 if len(running) == len(DAEMONS) else 3


def main(args: list[str]) -> int:
    if os.geteuid() != 0:
        print("tests/testbed/cluster: needs root (network namespaces, daemons, users)")
        return 2
    command = args[0] if args else "status"
    try:
        if command == "up":
            up()
        elif command == "down":
            down()
        elif command == "status":
            return status()
        else:
            print("usage: tests/testbed/cluster up|down|status")
            return 2
    except TestbedError as exc:
        print(f"testbed {command}: {exc}")
        return 1
    return 0
