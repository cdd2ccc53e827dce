"""hpcnb.ssh.route: the hops to a login host from an ssh config (aliases, ProxyJump, ProxyCommand,
identity and known_hosts files, host key names, keepalive) and how the cluster's own values mix in.

Pure: every config is built with paramiko.SSHConfig.from_text; nothing is connected.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import paramiko
import pytest

from hpcnb.errors import ConfigError
from hpcnb.ssh import hostkeys
from hpcnb.ssh.route import (
    DEFAULT_KEEPALIVE_S,
    MAX_JUMP_DEPTH,
    Defaults,
    Hop,
    describe,
    direct_hop,
    parse_jump,
    route,
)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $HOME (for ~ expansion) and a fixed local user name (getpass.getuser)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(var, "localme")
    return tmp_path


def cfg(text: str) -> paramiko.SSHConfig:
    return paramiko.SSHConfig.from_text(textwrap.dedent(text))


def one(hops: list[Hop]) -> Hop:
    assert len(hops) == 1, hops
    return hops[0]


# --- aliases, users, ports ---------------------------------------------------------------------


def test_alias_resolves_hostname_user_and_port() -> None:
    config = cfg("""
        Host mycluster
            HostName login.example.org
            User alice
            Port 2222
    """)
    hop = one(route("mycluster", Defaults(), config))
    assert (hop.alias, hop.hostname, hop.user, hop.port) == ("mycluster", "login.example.org", "alice", 2222)
    assert hop.proxy_command is None


def test_unknown_host_uses_the_name_port_22_and_the_local_user() -> None:
    hop = one(route("login.example.org", Defaults(), cfg("")))
    assert (hop.hostname, hop.port, hop.user) == ("login.example.org", 22, "localme")
    assert hop.key_names == ("login.example.org",)


def test_empty_config_object_is_used_as_given() -> None:
    hop = one(route("h", Defaults(user="bob"), paramiko.SSHConfig()))
    assert (hop.hostname, hop.user, hop.port) == ("h", "bob", 22)


def test_explicit_cluster_values_win_for_the_target(home: Path) -> None:
    config = cfg("""
        Host mycluster
            HostName login.example.org
            User alice
            Port 2222
            IdentityFile ~/.ssh/id_config
    """)
    defaults = Defaults(user="bob", port=2200, identity_file="/keys/cluster", known_hosts="/kh/cluster")
    hop = one(route("mycluster", defaults, config))
    assert (hop.user, hop.port) == ("bob", 2200)
    assert hop.identity_files == ("/keys/cluster", str(home / ".ssh/id_config"))
    assert hop.known_hosts[0] == "/kh/cluster"


def test_ssh_config_fills_in_what_the_cluster_leaves_unset() -> None:
    config = cfg("""
        Host mycluster
            HostName login.example.org
            User alice
            Port 2222
    """)
    hop = one(route("mycluster", Defaults(user=None, port=None), config))
    assert (hop.user, hop.port) == ("alice", 2222)


def test_cluster_values_are_only_fallbacks_for_jump_hosts(home: Path) -> None:
    config = cfg("""
        Host mycluster
            HostName login.example.org
            ProxyJump gw1,gw2
        Host gw1
            HostName gw1.example.org
            User jumper
            Port 2022
            IdentityFile ~/.ssh/id_gw
        Host gw2
            HostName gw2.example.org
    """)
    defaults = Defaults(user="bob", port=2200, identity_file="/keys/cluster", known_hosts="/kh/cluster")
    gw1, gw2, target = route("mycluster", defaults, config)
    # gw1's own config comes first; the cluster's identity file is tried after its IdentityFile
    assert (gw1.hostname, gw1.user, gw1.port) == ("gw1.example.org", "jumper", 2022)
    assert gw1.identity_files == (str(home / ".ssh/id_gw"), "/keys/cluster")
    # gw2 has nothing of its own: the cluster user is the fallback, but never the cluster port
    assert (gw2.hostname, gw2.user, gw2.port) == ("gw2.example.org", "bob", 22)
    assert gw2.identity_files == ("/keys/cluster",)
    assert (target.hostname, target.user, target.port) == ("login.example.org", "bob", 2200)
    # the cluster's known_hosts file is checked first on every hop
    assert all(h.known_hosts[0] == "/kh/cluster" for h in (gw1, gw2, target))


# --- ProxyJump ----------------------------------------------------------------------------------


def test_proxyjump_one_hop_looked_up_in_the_config() -> None:
    config = cfg("""
        Host mycluster
            HostName login.example.org
            User alice
            ProxyJump bastion
        Host bastion
            HostName bastion.example.org
            User gate
            Port 2022
    """)
    jump, target = route("mycluster", Defaults(), config)
    assert (jump.alias, jump.hostname) == ("bastion", "bastion.example.org")
    assert (jump.user, jump.port) == ("gate", 2022)
    assert (target.hostname, target.user, target.port) == ("login.example.org", "alice", 22)


def test_proxyjump_several_hops_in_order() -> None:
    config = cfg("""
        Host mycluster
            HostName login.example.org
            ProxyJump a, b ,c
        Host a
            HostName a.example.org
        Host b
            HostName b.example.org
            User buser
    """)
    hops = route("mycluster", Defaults(), config)
    assert [h.hostname for h in hops] == ["a.example.org", "b.example.org", "c", "login.example.org"]
    assert hops[1].user == "buser"
    assert hops[2].user == "localme"


def test_proxyjump_user_host_port_forms() -> None:
    config = cfg("""
        Host mycluster
            HostName login.example.org
            ProxyJump ssh://first@gw1:2201,second@gw2:2202
        Host gw1
            HostName gw1.example.org
            User ignored
            Port 9999
        Host gw2
            HostName gw2.example.org
            User ignored
    """)
    gw1, gw2, _ = route("mycluster", Defaults(), config)
    assert (gw1.hostname, gw1.user, gw1.port) == ("gw1.example.org", "first", 2201)
    assert gw1.key_names == ("[gw1.example.org]:2201",)
    assert (gw2.hostname, gw2.user, gw2.port) == ("gw2.example.org", "second", 2202)


def test_proxyjump_user_only_keeps_the_configured_port() -> None:
    config = cfg("""
        Host mycluster
            ProxyJump me@gw
        Host gw
            Port 2022
    """)
    gw, _ = route("mycluster", Defaults(), config)
    assert (gw.user, gw.port) == ("me", 2022)


def test_first_jump_hosts_own_proxyjump_applies() -> None:
    config = cfg("""
        Host mycluster
            HostName login.example.org
            ProxyJump inner
        Host inner
            HostName inner.example.org
            ProxyJump outer
        Host outer
            HostName outer.example.org
            User o
    """)
    hops = route("mycluster", Defaults(), config)
    assert [h.hostname for h in hops] == ["outer.example.org", "inner.example.org", "login.example.org"]
    assert hops[0].user == "o"


def test_later_jump_hosts_own_proxyjump_is_ignored() -> None:
    # like ssh -J a,b: b is reached through a, whatever b's own ProxyJump says
    config = cfg("""
        Host mycluster
            ProxyJump a,b
        Host b
            ProxyJump elsewhere
    """)
    assert [h.hostname for h in route("mycluster", Defaults(), config)] == ["a", "b", "mycluster"]


def test_proxyjump_loop_is_a_config_error() -> None:
    config = cfg("""
        Host loop
            ProxyJump loop
    """)
    with pytest.raises(ConfigError, match=f"nests deeper than {MAX_JUMP_DEPTH}"):
        route("loop", Defaults(), config)


def test_proxyjump_two_host_loop_is_a_config_error() -> None:
    config = cfg("""
        Host a
            ProxyJump b
        Host b
            ProxyJump a
    """)
    with pytest.raises(ConfigError, match="nests"):
        route("a", Defaults(), config)


def test_proxyjump_none_overrides_a_later_wildcard() -> None:
    config = cfg("""
        Host bastion
            ProxyJump none
        Host *
            ProxyJump bastion
    """)
    assert [h.hostname for h in route("mycluster", Defaults(), config)] == ["bastion", "mycluster"]
    assert one(route("bastion", Defaults(), config)).proxy_command is None


def test_proxycommand_none_means_no_command() -> None:
    config = cfg("""
        Host mycluster
            ProxyCommand none
    """)
    assert one(route("mycluster", Defaults(), config)).proxy_command is None


def test_proxycommand_none_blocks_a_later_proxyjump() -> None:
    config = cfg("""
        Host mycluster
            ProxyCommand none
        Host bastion
            ProxyJump none
        Host *
            ProxyJump bastion
    """)
    assert [h.hostname for h in route("mycluster", Defaults(), config)] == ["mycluster"]


def test_proxyjump_none_blocks_a_later_proxycommand() -> None:
    config = cfg("""
        Host mycluster
            ProxyJump none
        Host *
            ProxyCommand nc %h %p
    """)
    assert one(route("mycluster", Defaults(), config)).proxy_command is None


# --- ProxyCommand -------------------------------------------------------------------------------


def test_proxycommand_on_a_direct_route() -> None:
    config = cfg("""
        Host mycluster
            HostName login.example.org
            ProxyCommand nc %h %p
    """)
    assert one(route("mycluster", Defaults(), config)).proxy_command == "nc login.example.org 22"


def test_proxycommand_kept_on_the_first_hop_only() -> None:
    config = cfg("""
        Host mycluster
            ProxyJump gw1,gw2
        Host gw1
            ProxyCommand connect-gw1 %h
        Host gw2
            ProxyCommand connect-gw2 %h
    """)
    gw1, gw2, target = route("mycluster", Defaults(), config)
    assert gw1.proxy_command == "connect-gw1 gw1"
    assert gw2.proxy_command is None
    assert target.proxy_command is None


def test_proxyjump_obtained_first_wins_over_proxycommand() -> None:
    config = cfg("""
        Host mycluster
            ProxyJump bastion
        Host *
            ProxyCommand nc %h %p
        Host bastion
            ProxyJump none
    """)
    hops = route("mycluster", Defaults(), config)
    assert [h.hostname for h in hops] == ["bastion", "mycluster"]
    assert hops[-1].proxy_command is None


def test_proxycommand_obtained_first_wins_over_proxyjump() -> None:
    config = cfg("""
        Host mycluster
            ProxyCommand nc %h %p
            ProxyJump bastion
    """)
    assert one(route("mycluster", Defaults(), config)).proxy_command == "nc mycluster 22"


# --- identities ---------------------------------------------------------------------------------


def test_identity_files_several_expanded_and_deduplicated(home: Path) -> None:
    config = cfg("""
        Host mycluster
            IdentityFile ~/.ssh/id_one
            IdentityFile /abs/id_two
        Host *
            IdentityFile ~/.ssh/id_one
            IdentityFile ~/.ssh/id_three
    """)
    hop = one(route("mycluster", Defaults(), config))
    assert hop.identity_files == (str(home / ".ssh/id_one"), "/abs/id_two", str(home / ".ssh/id_three"))
    assert hop.identities_only is False


def test_cluster_identity_file_not_repeated_when_config_names_it_too(home: Path) -> None:
    key = str(home / ".ssh/id_cluster")
    config = cfg("""
        Host mycluster
            IdentityFile ~/.ssh/id_cluster
    """)
    assert one(route("mycluster", Defaults(identity_file=key), config)).identity_files == (key,)


@pytest.mark.parametrize(("value", "expected"), [("yes", True), ("no", False)])
def test_identities_only(value: str, expected: bool) -> None:
    config = cfg(f"""
        Host mycluster
            IdentitiesOnly {value}
    """)
    assert one(route("mycluster", Defaults(), config)).identities_only is expected


# --- host keys ----------------------------------------------------------------------------------


def test_known_hosts_files_default(home: Path) -> None:
    hop = one(route("mycluster", Defaults(), cfg("")))
    assert hop.known_hosts == (str(home / ".ssh/known_hosts"), hostkeys.SYSTEM_KNOWN_HOSTS)


def test_known_hosts_files_from_config_with_the_cluster_file_first(home: Path) -> None:
    config = cfg("""
        Host mycluster
            UserKnownHostsFile ~/.ssh/kh_a /etc/kh_b
            GlobalKnownHostsFile /etc/ssh/kh_global
    """)
    hop = one(route("mycluster", Defaults(known_hosts="/cluster/kh"), config))
    assert hop.known_hosts == ("/cluster/kh", str(home / ".ssh/kh_a"), "/etc/kh_b", "/etc/ssh/kh_global")


def test_known_hosts_none_is_dropped() -> None:
    config = cfg("""
        Host mycluster
            UserKnownHostsFile none
            GlobalKnownHostsFile none
    """)
    hop = one(route("mycluster", Defaults(known_hosts="/cluster/kh"), config))
    assert hop.known_hosts == ("/cluster/kh",)


def test_host_key_alias_names_the_key() -> None:
    config = cfg("""
        Host mycluster
            HostName 10.0.0.5
            HostKeyAlias login.example.org
    """)
    hop = one(route("mycluster", Defaults(), config))
    assert hop.host_key_alias == "login.example.org"
    assert hop.key_names == ("login.example.org",)


def test_port_other_than_22_brackets_the_key_name() -> None:
    config = cfg("""
        Host mycluster
            HostName login.example.org
            Port 2222
    """)
    assert one(route("mycluster", Defaults(), config)).key_names == ("[login.example.org]:2222",)
    assert one(route("mycluster", Defaults(port=22), config)).key_names == ("login.example.org",)


def test_host_key_alias_is_used_verbatim_on_another_port() -> None:
    config = cfg("""
        Host mycluster
            HostName 10.0.0.5
            Port 2222
            HostKeyAlias login.example.org
    """)
    assert one(route("mycluster", Defaults(), config)).key_names == ("login.example.org",)


@pytest.mark.parametrize(
    ("value", "accept_new"),
    [("accept-new", True), ("yes", False), ("no", False), ("off", False), ("ask", False)],
)
def test_strict_host_key_checking(value: str, accept_new: bool) -> None:
    config = cfg(f"""
        Host mycluster
            StrictHostKeyChecking {value}
    """)
    # `no` never turns checking off: it is not even accept-new
    assert one(route("mycluster", Defaults(), config)).accept_new is accept_new


def test_accept_new_from_the_command_line_applies_to_every_hop() -> None:
    config = cfg("""
        Host mycluster
            ProxyJump gw
    """)
    assert all(h.accept_new for h in route("mycluster", Defaults(accept_new=True), config))


# --- timers ---------------------------------------------------------------------------------------


def test_keepalive_default_and_from_config() -> None:
    config = cfg("""
        Host fast
            ServerAliveInterval 5
        Host off
            ServerAliveInterval 0
    """)
    assert one(route("plain", Defaults(), config)).keepalive == DEFAULT_KEEPALIVE_S == 30
    assert one(route("fast", Defaults(), config)).keepalive == 5
    assert one(route("off", Defaults(), config)).keepalive == 0


def test_keepalive_count_gives_when_a_silent_login_is_dropped() -> None:
    config = cfg("""
        Host fast
            ServerAliveInterval 5
            ServerAliveCountMax 2
    """)
    assert one(route("plain", Defaults(), config)).keepalive_count == 3  # ssh_config(5)'s default
    hop = one(route("fast", Defaults(), config))
    assert (hop.keepalive, hop.keepalive_count) == (5, 2)


def test_times_in_ssh_time_format() -> None:
    config = cfg("""
        Host t
            ServerAliveInterval 1m
            ConnectTimeout 1m30s
    """)
    hop = one(route("t", Defaults(), config))
    assert (hop.keepalive, hop.connect_timeout) == (60, 90.0)


@pytest.mark.parametrize("line", ["ServerAliveInterval 5x", "ServerAliveCountMax -1",
                                  "ServerAliveCountMax 1m", "ConnectTimeout soon"])
def test_a_number_option_that_is_not_one_is_a_config_error(line: str) -> None:
    config = cfg(f"""
        Host bad
            {line}
    """)
    with pytest.raises(ConfigError, match=f"gives bad a {line.split()[0].lower()} of "):
        route("bad", Defaults(), config)


def test_connect_timeout() -> None:
    config = cfg("""
        Host slow
            ConnectTimeout 45
    """)
    assert one(route("slow", Defaults(), config)).connect_timeout == 45.0
    assert one(route("plain", Defaults(), config)).connect_timeout is None


# --- parse_jump, describe, direct_hop -----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gw", (None, "gw", None)),
        ("me@gw", ("me", "gw", None)),
        ("gw:2022", (None, "gw", 2022)),
        ("me@gw.example.org:2022", ("me", "gw.example.org", 2022)),
        ("ssh://me@gw:2022", ("me", "gw", 2022)),
        ("ssh://gw", (None, "gw", None)),
        ("  me@gw  ", ("me", "gw", None)),
        ("me@[fe80::1]:2022", ("me", "fe80::1", 2022)),
    ],
)
def test_parse_jump(spec: str, expected: tuple[str | None, str, int | None]) -> None:
    assert parse_jump(spec) == expected


@pytest.mark.parametrize("spec", ["", "gw:port", "gw:22:23", "gw:", "me@gw:", "@gw", "me@"])
def test_parse_jump_errors_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError, match="ProxyJump entry"):
        parse_jump(spec)


def test_bad_proxyjump_in_config_is_a_config_error() -> None:
    config = cfg("""
        Host mycluster
            ProxyJump gw:notaport
    """)
    with pytest.raises(ConfigError):
        route("mycluster", Defaults(), config)


def test_describe() -> None:
    config = cfg("""
        Host mycluster
            HostName login.example.org
            User alice
            ProxyJump gate@bastion:2022
    """)
    text = describe(route("mycluster", Defaults(), config))
    assert text == "gate@bastion:2022 -> alice@login.example.org:22"
    assert describe([]) == ""


def test_direct_hop() -> None:
    hop = direct_hop("node1", 2222, "alice", ["/k/id"], ["/kh"], accept_new=True, allow_agent=False)
    assert (hop.alias, hop.hostname, hop.port, hop.user) == ("node1", "node1", 2222, "alice")
    assert hop.identity_files == ("/k/id",) and hop.known_hosts == ("/kh",)
    assert hop.accept_new and not hop.allow_agent and not hop.identities_only
    assert hop.keepalive == DEFAULT_KEEPALIVE_S
    assert hop.proxy_command is None and hop.connect_timeout is None
    assert hop.key_names == ("[node1]:2222",)
    assert describe([hop]) == "alice@node1:2222"
