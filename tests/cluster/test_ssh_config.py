"""~/.ssh/config on the testbed ($HPCNB_SSH_CONFIG): aliases, ProxyJump chains through the gateway,
ProxyCommand, ServerAliveInterval, IdentitiesOnly + ssh-agent, precedence; and a whole session
(submit, attach, the notebook's API) through the gateway with the node hop's key accepted on request."""

from __future__ import annotations

import os
import socket
import subprocess
from types import SimpleNamespace

import paramiko
import pytest
from fixtures import gateway_env, host_fingerprint, prompts, ssh_config_copy
from hpcnb_driver import Hpcnb
from testbed import topology, totp
from testbed.accounts import identity_file

from hpcnb.errors import SSHError
from hpcnb.ssh import SSHRemote

pytestmark = pytest.mark.cluster


def cfg(login_host: str, **kw) -> SimpleNamespace:
    values = {"name": "t", "login_host": login_host, "port": 22, "user": None, "identity_file": None,
              "known_hosts": None, **kw}
    return SimpleNamespace(**values)


def code(_prompt) -> str:
    return totp.next_code()


@pytest.fixture
def tb_config(testbed, monkeypatch):
    monkeypatch.setenv("HPCNB_SSH_CONFIG", str(topology.SSH_CONFIG))


def test_laptop_has_no_route_to_login_inner_address(testbed):
    with pytest.raises(OSError):
        socket.create_connection((topology.LOGIN_INNER_ADDR, 22), timeout=2)


def test_alias_with_proxyjump_through_gateway(tb_config):
    with SSHRemote.from_config(cfg("tb-login"), prompt_handler=code) as remote:
        assert remote.run(["hostname"]).stdout.strip() == "login1"
        assert remote.host == topology.LOGIN_INNER_ADDR
        assert remote.route == (f"hpcuser@{topology.GATEWAY.addr}:22 -> "
                                f"hpcuser@{topology.LOGIN_INNER_ADDR}:22")


def test_proxyjump_chain_of_two_hops(tb_config):
    with SSHRemote.from_config(cfg("tb-login-chain"), prompt_handler=code) as remote:
        assert remote.run(["hostname"]).stdout.strip() == "login1"
        assert remote.route.count("->") == 2
        assert topology.NODES[0].addr in remote.route


def test_proxycommand(tb_config):
    with SSHRemote.from_config(cfg("tb-login-pc"), prompt_handler=None) as remote:
        assert isinstance(remote.transport.sock, paramiko.ProxyCommand)
        assert remote.run(["hostname"]).stdout.strip() == "login1"


def test_server_alive_interval_is_set_on_the_transport(tb_config):
    with SSHRemote.from_config(cfg("tb-login-pc"), prompt_handler=None) as remote:
        assert remote.keepalive == 15
        assert remote.transport.packetizer._Packetizer__keepalive_interval == 15


def test_explicit_cluster_values_win_over_ssh_config(tb_config):
    other = topology.USERS[1]
    with SSHRemote.from_config(cfg("tb-login-pc", user=other, identity_file=str(identity_file(other))),
                               prompt_handler=None) as remote:
        assert remote.run(["id", "-un"]).stdout.strip() == other


def test_second_connection_in_a_process_reuses_the_login(tb_config):
    asked = []

    def handler(prompt):
        asked.append(prompt)
        return totp.next_code()

    first = SSHRemote.from_config(cfg("tb-login"), prompt_handler=handler)
    second = SSHRemote.from_config(cfg("tb-login"), prompt_handler=handler)
    try:
        assert second.transport is first.transport
        first.close()
        assert second.run(["true"]).exit_status == 0
    finally:
        first.close()
        second.close()
    assert len(asked) == 1


@pytest.fixture
def agent(tmp_path):
    """An ssh-agent holding hpcuser's key."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.05"])
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(identity_file(topology.USERS[0]))], env=env, check=True,
                       capture_output=True)
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.mark.parametrize("only", ["yes", "no"])
def test_identities_only_ignores_other_agent_keys(testbed, tmp_path, monkeypatch, agent, only):
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    config = tmp_path / "ssh_config"
    config.write_text(f"""Host tb-agent
    HostName {topology.LOGIN.addr}
    User {topology.USERS[0]}
    IdentityFile {wrong}
    IdentitiesOnly {only}
    UserKnownHostsFile {topology.KNOWN_HOSTS}
""")
    monkeypatch.setenv("HPCNB_SSH_CONFIG", str(config))
    monkeypatch.setenv("SSH_AUTH_SOCK", agent)
    if only == "yes":
        with pytest.raises(SSHError, match="authentication failed") as err:
            SSHRemote.from_config(cfg("tb-agent"), prompt_handler=None)
        assert "ssh-agent" not in str(err.value)
    else:
        with SSHRemote.from_config(cfg("tb-agent"), prompt_handler=None) as remote:
            assert remote.run(["true"]).exit_status == 0


def test_session_through_the_gateway_node_key_accepted_on_request(testbed, tmp_path):
    """submit --no-attach, attach (node-ssh: the node's key is unknown -> exit 5, then accepted),
    GET /api/status through the tunnel, cancel. One TOTP prompt in all: the keeper (hpcnb.keeper)
    keeps the login for every later command and for the node hop."""
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(line for line in topology.KNOWN_HOSTS.read_text().splitlines(keepends=True)
                          if not line.startswith("node")))
    state = tmp_path / "state"
    state.mkdir()
    hpcnb = Hpcnb(state, testbed, home=tmp_path)
    hpcnb.env.update(gateway_env(tmp_path, ssh_config_copy(tmp_path, kh)))
    cluster = "testbed-jump-node-ssh"
    job_id = hpcnb.submit(cluster, "--time", "00:10:00")
    try:
        assert len(prompts(tmp_path)) == 1
        status = {r["job_id"]: r for r in hpcnb.list_json(cluster)}[job_id]
        node = next(n for n in topology.NODES if n.name == status["node"])
        proc = hpcnb.run("attach", job_id, "--cluster", cluster, "--no-browser", timeout=120)
        assert proc.returncode == 5, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert host_fingerprint(node) in proc.stderr and "--accept-new-host-key" in proc.stderr
        before = len(prompts(tmp_path))
        with hpcnb.attach(job_id, cluster, "--accept-new-host-key") as attached:
            code_, body = attached.http("GET", "/api/status")
            assert code_ == 200 and "started" in body
        assert len(prompts(tmp_path)) == before == 1  # the kept login carries the node hop too
        assert node.name in kh.read_text()
    finally:
        hpcnb.run("cancel", job_id, "--cluster", cluster)
