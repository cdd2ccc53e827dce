"""The node hop process's pure parts: what a parent hands its child, and what the child says back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcnb.errors import AuthenticationFailed, HostKeyError, SSHError
from hpcnb.ssh import auth, hopchild, hopprocess, hostkeys
from hpcnb.ssh.openers import Target
from hpcnb.ssh.transport import Login


def test_the_spec_carries_the_login_whole_and_no_prompt(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    creds = auth.Credentials(("/k/id_ed25519", "/k/id_rsa"), True, False, auth.askpass_or_terminal,
                             {"/k/id_rsa": "s3cret"})
    login = Login("alice", creds.keys_only(), hostkeys.KnownHosts([str(known)]), 7.5, True, 30, 4)
    target = {"mode": "socket", "host": None, "port": None, "socket": "/tmp/j.sock", "node": "n1",
              "node_aliases": ["n1.cluster"]}
    spec = json.loads(hopchild.spec_for("n1", 22, ["n1", "n1.cluster"], login, target, 5, 6))
    assert (spec["host"], spec["port"], spec["names"], spec["wire"], spec["listener"]) == (
        "n1", 22, ["n1", "n1.cluster"], 5, 6)
    assert spec["target"] == target
    again = hopchild._login(spec["login"])
    assert (again.user, again.timeout, again.accept_new_host_key, again.keepalive, again.keepalive_count) == (
        "alice", 7.5, True, 30, 4)
    assert again.known.paths == [str(known)]
    assert again.creds.identity_files == creds.identity_files
    assert (again.creds.identities_only, again.creds.allow_agent) == (True, False)
    assert again.creds.passphrases() == {"/k/id_rsa": "s3cret"}
    assert again.creds.prompt is None  # a node hop never prompts


@pytest.mark.parametrize(("name", "cls"), [("HostKeyError", HostKeyError),
                                           ("AuthenticationFailed", AuthenticationFailed),
                                           ("SSHError", SSHError), ("NoSuchError", SSHError)])
def test_a_childs_error_comes_back_as_its_class_with_its_hint(name: str, cls: type) -> None:
    error = hopchild.error_from({"type": name, "message": "host key of n1 is unknown", "hint": "ssh n1"})
    assert type(error) is cls
    assert (error.message, error.hint) == ("host key of n1 is unknown", "ssh n1")


def test_only_node_hops_on_posix_go_to_a_process_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    node = Target("node-ssh", None, 8888, None, "n1")
    assert hopprocess.wanted(node)
    assert hopprocess.wanted(Target("socket", None, None, "/tmp/s", "n1"))
    assert not hopprocess.wanted(Target("direct", "10.0.0.5", 8888, None, None))
    monkeypatch.setenv(hopprocess.ENV, "0")
    assert not hopprocess.wanted(node)
