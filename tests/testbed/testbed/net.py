"""Network namespaces and veth links: laptop <-> login1 <-> (bridge) <-> node01, node02;
laptop <-> gateway <-> (login1's bridge): the gateway reaches login1's inner address, the laptop does not;
laptop <-> login2 <-> (login1's bridge), and the laptop's name for both login nodes (LOGIN_ALIAS)."""

from __future__ import annotations

from pathlib import Path

from .proc import sh
from .topology import (
    GATEWAY,
    GATEWAY_IF,
    GATEWAY_LAPTOP_ADDR,
    HOSTS,
    LAPTOP_ADDR,
    LAPTOP_HOSTS,
    LAPTOP_IF,
    LOGIN,
    LOGIN2,
    LOGIN2_IF,
    LOGIN2_LAPTOP_ADDR,
    LOGIN_ALIAS,
    LOGIN_INNER_ADDR,
    NODES,
    TESTBED_NET,
    Host,
)

LAPTOP_LINKS = (LAPTOP_IF, GATEWAY_IF, LOGIN2_IF)


def namespace_exists(host: Host) -> bool:
    return Path(f"/run/netns/{host.name}").exists()


def link_exists(name: str, ns: str | None = None) -> bool:
    argv = ["ip", *(["-n", ns] if ns else []), "link", "show", name]
    return sh(argv, check=False).returncode == 0


def hosts_file(host: Host) -> Path:
    return Path("/etc/netns") / host.name / "hosts"


def up() -> None:
    # Inside the cluster the gateway and login2 are known by their addresses on the bridge.
    names = "".join(f"{h.cluster_addr or h.addr}\t{h.name}\n" for h in HOSTS)
    for host in HOSTS:
        hosts_file(host).parent.mkdir(parents=True, exist_ok=True)
        hosts_file(host).write_text(f"127.0.0.1\tlocalhost\n{names}")
        if not namespace_exists(host):
            sh(["ip", "netns", "add", host.name])
        sh(["ip", "-n", host.name, "link", "set", "lo", "up"])
        # Hosts never route for others: the laptop must not reach the nodes through login1.
        sh(["ip", "netns", "exec", host.name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])

    # The laptop side gets no route into the cluster: an "unreachable" route for the whole testbed
    # range, so a packet to a node fails at once here and never leaves through the default route.
    sh(["ip", "route", "replace", "unreachable", TESTBED_NET])
    if not link_exists(LAPTOP_IF):
        sh(["ip", "link", "add", LAPTOP_IF, "type", "veth", "peer", "name", "eth0",
            "netns", LOGIN.name])
        sh(["ip", "addr", "add", f"{LAPTOP_ADDR}/30", "dev", LAPTOP_IF])
        sh(["ip", "-n", LOGIN.name, "addr", "add", f"{LOGIN.addr}/30", "dev", "eth0"])
    sh(["ip", "link", "set", LAPTOP_IF, "up"])
    sh(["ip", "-n", LOGIN.name, "link", "set", "eth0", "up"])

    if not link_exists("br0", LOGIN.name):
        sh(["ip", "-n", LOGIN.name, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", LOGIN.name, "addr", "add", f"{LOGIN_INNER_ADDR}/24", "dev", "br0"])
    sh(["ip", "-n", LOGIN.name, "link", "set", "br0", "up"])

    for node in NODES:
        port = f"v-{node.name}"
        if not link_exists(port, LOGIN.name):
            sh(["ip", "-n", LOGIN.name, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", node.name])
            sh(["ip", "-n", node.name, "addr", "add", f"{node.addr}/24", "dev", "eth0"])
        sh(["ip", "-n", LOGIN.name, "link", "set", port, "master", "br0", "up"])
        sh(["ip", "-n", node.name, "link", "set", "eth0", "up"])
        # Nodes reach all of login1's addresses through it; login1 forwards nothing further. No
        # default route: a DNS query to the machine's resolver then fails at once ("network is
        # unreachable") instead of waiting out its timeout in login1's dropped packets; pbs_mom
        # reverse-resolves each interface address as it starts (::1, fe80::...: 2 x 20 s).
        sh(["ip", "-n", node.name, "route", "replace", TESTBED_NET, "via", LOGIN_INNER_ADDR])
        sh(["ip", "-n", node.name, "route", "del", "default"], check=False)
    two_legged_up(GATEWAY, GATEWAY_IF, GATEWAY_LAPTOP_ADDR)
    two_legged_up(LOGIN2, LOGIN2_IF, LOGIN2_LAPTOP_ADDR)
    laptop_names_up()


def two_legged_up(host: Host, laptop_if: str, laptop_addr: str) -> None:
    """A host with a link to the laptop (its `addr`) and one on login1's bridge (its
    `cluster_addr`): the gateway, login2. Added to a running testbed without touching the others."""
    if not link_exists(laptop_if):
        sh(["ip", "link", "add", laptop_if, "type", "veth", "peer", "name", "eth0", "netns", host.name])
        sh(["ip", "addr", "add", f"{laptop_addr}/30", "dev", laptop_if])
        sh(["ip", "-n", host.name, "addr", "add", f"{host.addr}/30", "dev", "eth0"])
    sh(["ip", "link", "set", laptop_if, "up"])
    sh(["ip", "-n", host.name, "link", "set", "eth0", "up"])
    port = f"v-{host.name}"
    if not link_exists(port, LOGIN.name):
        sh(["ip", "-n", LOGIN.name, "link", "add", port, "type", "veth", "peer", "name", "eth1",
            "netns", host.name])
        sh(["ip", "-n", host.name, "addr", "add", f"{host.cluster_addr}/24", "dev", "eth1"])
    sh(["ip", "-n", LOGIN.name, "link", "set", port, "master", "br0", "up"])
    sh(["ip", "-n", host.name, "link", "set", "eth1", "up"])


# The laptop's /etc/hosts gets one marked block: LOGIN_ALIAS on both login nodes' outer addresses.
# glibc's getaddrinfo returns every address a name has in /etc/hosts (host.conf(5) "multi on",
# Debian's default), in file order, as a resolver returns a round-robin name's records.
HOSTS_BEGIN = "# hpcnb testbed begin (tests/testbed/cluster; removed by `down`)\n"
HOSTS_END = "# hpcnb testbed end\n"


def laptop_names_block() -> str:
    # login2 first: a test takes the first-listed node down to send hpcnb to the other, and login2
    # carries nothing else (other tests and the benchmarks use login1 by its address meanwhile).
    return f"{HOSTS_BEGIN}{LOGIN2.addr}\t{LOGIN_ALIAS}\n{LOGIN.addr}\t{LOGIN_ALIAS}\n{HOSTS_END}"


def _without_block(text: str) -> str:
    start = text.find(HOSTS_BEGIN)
    if start < 0:
        return text
    end = text.find(HOSTS_END, start)
    return text[:start] + (text[end + len(HOSTS_END):] if end >= 0 else "")


def laptop_names_up() -> None:
    text = LAPTOP_HOSTS.read_text()
    wanted = _without_block(text)
    wanted += ("" if not wanted or wanted.endswith("\n") else "\n") + laptop_names_block()
    if wanted != text:
        # In place, not by rename: /etc/hosts is often a bind mount (containers).
        LAPTOP_HOSTS.write_text(wanted)


def laptop_names_down() -> None:
    text = LAPTOP_HOSTS.read_text()
    if HOSTS_BEGIN in text:
        LAPTOP_HOSTS.write_text(_without_block(text))


def down() -> None:
    # Deleting a namespace deletes the veth ends inside it, and with them their peers.
    for host in HOSTS:
        if namespace_exists(host):
            sh(["ip", "netns", "del", host.name], check=False)
        if hosts_file(host).exists():
            hosts_file(host).unlink()
            hosts_file(host).parent.rmdir()
    for link in LAPTOP_LINKS:
        if link_exists(link):
            sh(["ip", "link", "del", link], check=False)
    laptop_names_down()
    if unreachable_route_present():
        sh(["ip", "route", "del", "unreachable", TESTBED_NET], check=False)


def unreachable_route_present() -> bool:
    return TESTBED_NET in sh(["ip", "route", "show", "type", "unreachable"], check=False).stdout


def pids_in(host: Host) -> list[int]:
    if not namespace_exists(host):
        return []
    out = sh(["ip", "netns", "pids", host.name], check=False).stdout
    return [int(p) for p in out.split()]


def leftovers() -> list[str]:
    """What of the network part is still there (for `status` and for the teardown test)."""
    found = [f"namespace {h.name}" for h in HOSTS if namespace_exists(h)]
    found += [f"link {link}" for link in LAPTOP_LINKS if link_exists(link)]
    if HOSTS_BEGIN in LAPTOP_HOSTS.read_text():
        found.append(f"{LOGIN_ALIAS} in {LAPTOP_HOSTS}")
    if unreachable_route_present():
        found.append(f"route {TESTBED_NET}")
    return found
