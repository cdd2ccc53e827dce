"""hpcnb.openssh's pure parts: the options it adds to `ssh`, `ssh -G` read back, errors classified,
the master chosen per platform (Windows cannot run here: its branch is tested by its choice)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hpcnb.errors import AuthenticationFailed, ConnectionLost, HostKeyError, SSHError
from hpcnb.openssh import options as o
from hpcnb.openssh.remote import OpenSSHRemote


def cfg(**kw):
    values = {"user": None, "port": None, "identity_file": None, "known_hosts": None,
              "persist": 43200.0, "login_host": "login.example.org", "name": "c"}
    return SimpleNamespace(**{**values, **kw})


def test_explicit_values_become_options_and_nothing_else():
    opts = o.base_options(cfg(user="alice", port=2222, identity_file="/k/id"), {}, o.Control("yours", "/c"),
                          accept_new=False)
    assert opts == ["-o", "ConnectTimeout=10", "-l", "alice", "-p", "2222", "-i", "/k/id",
                    "-o", "StrictHostKeyChecking=yes", "-o", "ControlMaster=no"]


def test_the_node_hop_gets_neither_the_login_port_nor_its_master():
    opts = o.base_options(cfg(port=2222), {}, o.Control("hpcnb", "/run/ssh-abc"), accept_new=False,
                          node_hop=True)
    assert "-p" not in opts and opts[-2:] == ["-o", "ControlPath=none"]


def test_known_hosts_file_first_then_the_users_with_spaces_quoted():
    opts = o.base_options(cfg(known_hosts="/my files/kh"),
                          {"userknownhostsfile": "~/.ssh/known_hosts ~/.ssh/known_hosts2"},
                          o.Control("none"), accept_new=False)
    assert 'UserKnownHostsFile="/my files/kh" ~/.ssh/known_hosts ~/.ssh/known_hosts2' in opts


@pytest.mark.parametrize(("user_mode", "flag", "expected"), [
    ("no", False, "yes"), ("off", False, "yes"), ("ask", False, "yes"), ("yes", False, "yes"),
    ("accept-new", False, "accept-new"), ("no", True, "accept-new"),
])
def test_host_key_checking_is_never_off(user_mode, flag, expected):
    assert o.host_key_option({"stricthostkeychecking": user_mode}, flag) == [
        "-o", f"StrictHostKeyChecking={expected}"]


def test_hpcnbs_own_master_and_how_it_is_started():
    control = o.Control("hpcnb", "/run/hpcnb/ssh-%C", 3600)
    opts = o.base_options(cfg(), {}, control, accept_new=False)
    assert opts[-4:] == ["-o", "ControlMaster=no", "-o", "ControlPath=/run/hpcnb/ssh-%C"]
    assert o.master_options(control) == ["-M", "-N", "-f", "-o", "ControlPersist=3600",
                                         "-o", "ServerAliveInterval=30"]
    assert o.master_options(o.Control("hpcnb", "/p", 0))[4] == "ControlPersist=yes"
    # The user's own ServerAliveInterval (ssh -G prints 0 when none is set) is left to ssh.
    assert o.master_options(control, {"serveraliveinterval": "15"})[-1] == "ControlPersist=3600"


def test_no_master_means_no_control_path():
    assert o.base_options(cfg(), {}, o.Control("none"), accept_new=False)[-2:] == ["-o", "ControlPath=none"]


def test_ssh_G_output_read_back():
    text = "user alice\nhostname 10.0.0.1\nport 22\nidentityfile ~/.ssh/a\nidentityfile ~/.ssh/b\n" \
           "controlpath /home/alice/.ssh/cm-abc\nstricthostkeychecking ask\n"
    found = o.parse_effective(text)
    assert found["identityfile"] == "~/.ssh/a" and found["hostname"] == "10.0.0.1"
    assert o.user_control_path(found) == "/home/alice/.ssh/cm-abc"
    assert o.user_control_path({"controlpath": "none"}) is None
    assert o.user_control_path({}) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.22 25 Aug 2026", "OpenSSH_9.2p1"),
    ("OpenSSH_for_Windows_8.1p1, LibreSSL 3.0.2", "OpenSSH_for_Windows_8.1p1"),
    ("Sun_SSH_1.1", None),
])
def test_version(text, expected):
    assert o.version(text) == expected


def test_errors_classified_from_ssh_stderr():
    assert isinstance(o.classify("Host key verification failed.\n", "h"), HostKeyError)
    assert isinstance(o.classify("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n", "h"),
                      HostKeyError)
    denied = o.classify("alice@h: Permission denied (publickey,keyboard-interactive).\n", "h")
    assert isinstance(denied, AuthenticationFailed) and "Permission denied" in str(denied)
    other = o.classify("ssh: connect to host h port 22: Connection refused\n", "h", ["squeue"])
    assert type(other) is SSHError and "Connection refused" in str(other) and "squeue" in str(other)


@pytest.mark.parametrize("stderr", [
    "Connection to h closed by remote host.\n",
    "client_loop: send disconnect: Broken pipe\n",
    "Read from remote host h: Connection reset by peer\nConnection reset by 10.0.0.1 port 22\n",
    "mux_client_read_packet: read header failed: Broken pipe\n",
])
def test_a_connection_that_ended_under_a_command_is_connection_lost(stderr):
    # hpcnb.batch asks a query again on ConnectionLost (a new login through the master)
    assert isinstance(o.classify(stderr, "h", ["squeue"]), ConnectionLost)
    assert type(o.classify(stderr, "h")) is SSHError  # no command: nothing that may have run


def test_windows_has_no_master(monkeypatch):
    remote = OpenSSHRemote.__new__(OpenSSHRemote)
    remote.cfg, remote.effective = cfg(), {"controlpath": "/home/a/.ssh/cm"}
    monkeypatch.setattr(sys, "platform", "win32")
    assert remote._control(None) == o.Control("none")


def test_a_users_live_master_is_ridden_and_never_started_for_them(monkeypatch, tmp_path):
    remote = OpenSSHRemote.__new__(OpenSSHRemote)
    remote.cfg, remote.effective = cfg(), {"controlpath": "/home/a/.ssh/cm-x"}
    monkeypatch.setattr(sys, "platform", "linux")
    remote._answers = lambda path: True  # type: ignore[method-assign]
    assert remote._control(tmp_path) == o.Control("yours", "/home/a/.ssh/cm-x")
    remote._answers = lambda path: False  # type: ignore[method-assign]  # theirs is not running
    assert remote._control(tmp_path).kind == "hpcnb"
    remote.effective = {"controlpath": "none"}
    mine = remote._control(tmp_path / "k")
    assert mine.kind == "hpcnb" and mine.persist_s == 43200
    assert mine.path is not None and re.fullmatch(r"ssh-[0-9a-f]{24}", Path(mine.path).name)
    other = OpenSSHRemote.__new__(OpenSSHRemote)  # another known_hosts: another master
    other.cfg, other.effective = cfg(known_hosts="/elsewhere"), {"controlpath": "none"}
    assert other._control(tmp_path / "k").path != mine.path
