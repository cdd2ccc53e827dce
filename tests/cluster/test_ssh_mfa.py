"""Keyboard-interactive (TOTP) through the testbed gateway: real sshd, PAM pam_oath, and the real CLI.

The gateway wants `AuthenticationMethods publickey,keyboard-interactive`; the code is computed by
tests/testbed/testbed/totp.py, which hpcnb runs as its HPCNB_ASKPASS program and which logs each prompt.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fixtures import gateway_env, prompts, seed_session
from hpcnb_driver import Hpcnb
from testbed import topology, totp

from hpcnb.errors import SSHError
from hpcnb.prompts import Prompt
from hpcnb.ssh import SSHRemote

pytestmark = pytest.mark.cluster


def cfg(login_host: str) -> SimpleNamespace:
    return SimpleNamespace(name="t", login_host=login_host, port=22, user=None, identity_file=None,
                           known_hosts=None)


@pytest.fixture
def hpcnb(testbed, tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    h = Hpcnb(state, testbed, home=tmp_path)
    h.env.update(gateway_env(tmp_path))
    seed_session(state, "testbed-jump")
    return h


def test_handler_gets_the_servers_prompt_once_with_echo_off(testbed, monkeypatch):
    monkeypatch.setenv("HPCNB_SSH_CONFIG", str(topology.SSH_CONFIG))
    seen: list[Prompt] = []

    def handler(prompt: Prompt) -> str:
        seen.append(prompt)
        return totp.next_code()

    with SSHRemote.from_config(cfg("tb-login"), prompt_handler=handler) as remote:
        assert remote.run(["hostname"]).stdout.strip() == "login1"
    assert len(seen) == 1
    assert seen[0].text.startswith("One-time password (OATH) for `hpcuser'")
    assert seen[0].echo is False
    assert seen[0].host == topology.GATEWAY.addr


def test_keys_alone_are_not_enough_for_the_gateway(testbed, monkeypatch):
    monkeypatch.setenv("HPCNB_SSH_CONFIG", str(topology.SSH_CONFIG))
    with pytest.raises(SSHError, match=r"this hop takes keys only"):
        SSHRemote.from_config(cfg("tb-gateway"), prompt_handler=None)


def test_whole_list_asks_exactly_once(hpcnb, tmp_path):
    proc = hpcnb.run("list", "--cluster", "testbed-jump", "--all")
    assert proc.returncode == 0, proc.stderr
    asked = prompts(tmp_path)
    assert len(asked) == 1, asked
    assert "One-time password (OATH) for `hpcuser'" in asked[0]


def test_wrong_code_is_exit_4_with_one_clear_line(hpcnb, tmp_path):
    hpcnb.env["HPCNB_TB_TOTP_WRONG"] = "1"
    proc = hpcnb.run("list", "--cluster", "testbed-jump")
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"authentication failed for hpcuser@{topology.GATEWAY.addr}" in lines[0]
    assert "keyboard-interactive" in lines[0]
    assert len(prompts(tmp_path)) == 1  # a refused code is not asked again


def test_no_terminal_and_no_askpass_says_how(hpcnb, tmp_path):
    del hpcnb.env["HPCNB_ASKPASS"]
    proc = hpcnb.run("list", "--cluster", "testbed-jump")  # stdin is /dev/null, no tty
    assert proc.returncode == 4, proc.stderr
    assert "HPCNB_ASKPASS" in proc.stderr
    assert "One-time password" in proc.stderr
