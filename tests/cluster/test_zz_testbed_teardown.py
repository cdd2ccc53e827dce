"""`down` leaves nothing behind and `up` after `down` works.

Runs last (by file name) and leaves the testbed up again.
"""

from __future__ import annotations

import subprocess

import pytest
from fixtures import CLUSTER_CMD, ssh
from testbed import leftovers, net, topology

pytestmark = pytest.mark.cluster


def test_down_leaves_nothing_and_up_works_again(testbed):
    proc = subprocess.run([str(CLUSTER_CMD), "down"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert leftovers() == []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(h.name in namespaces for h in topology.HOSTS)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert topology.LAPTOP_IF not in links and topology.LOGIN2_IF not in links
    assert topology.LOGIN_ALIAS not in topology.LAPTOP_HOSTS.read_text()  # the machine's /etc/hosts
    daemons = subprocess.run(["pgrep", "-a", "-f", str(topology.ROOT)], capture_output=True,
                             text=True).stdout
    assert daemons == ""
    assert not topology.ROOT.exists()
    assert not net.hosts_file(topology.LOGIN).exists()

    proc = subprocess.run([str(CLUSTER_CMD), "up"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ssh("hostname").stdout.strip() == "login1"
    assert ssh("hostname", host=topology.LOGIN2.addr).stdout.strip() == "login2"
    assert topology.LAPTOP_HOSTS.read_text().count(topology.LOGIN_ALIAS) == 2
