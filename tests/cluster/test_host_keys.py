"""Host keys on every hop, through the real CLI: unknown -> exit 5 with the fingerprint and the flag;
--accept-new-host-key adds it (like OpenSSH's accept-new); a changed key is refused even then."""

from __future__ import annotations

import subprocess

import pytest
from fixtures import gateway_env, host_fingerprint, prompts, seed_session, ssh_config_copy
from hpcnb_driver import Hpcnb
from testbed import topology

pytestmark = pytest.mark.cluster


def known_hosts_without(tmp_path, *hosts: topology.Host):
    names = {h.name for h in hosts}
    lines = [line for line in topology.KNOWN_HOSTS.read_text().splitlines(keepends=True)
             if line.split(",")[0] not in names]
    path = tmp_path / "known_hosts"
    path.write_text("".join(lines))
    return path


def config_with(tmp_path, known_hosts) -> str:
    path = tmp_path / "hpcnb.toml"
    path.write_text(f"""
[clusters.kh]
scheduler = "slurm"
login_host = "{topology.LOGIN.addr}"
user = "{topology.USERS[0]}"
identity_file = "{topology.CLIENT / f'id_ed25519_{topology.USERS[0]}'}"
known_hosts = "{known_hosts}"
tunnel = "direct"
""")
    return path


def cli(tmp_path, config) -> Hpcnb:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return Hpcnb(state, config, home=tmp_path)


def test_unknown_login_key_then_accept_new(testbed, tmp_path):
    kh = known_hosts_without(tmp_path, topology.LOGIN)
    hpcnb = cli(tmp_path, config_with(tmp_path, kh))
    seed_session(tmp_path / "state", "kh")
    fp = host_fingerprint(topology.LOGIN)

    proc = hpcnb.run("list", "--cluster", "kh")
    assert proc.returncode == 5, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert fp in lines[0] and "--accept-new-host-key" in lines[0]
    assert fp not in subprocess.run(["ssh-keygen", "-l", "-f", str(kh)], capture_output=True,
                                    text=True).stdout  # never silently added

    proc = hpcnb.run("list", "--cluster", "kh", "--accept-new-host-key")
    assert proc.returncode == 0, proc.stderr
    listed = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(kh)], capture_output=True,
                            text=True).stdout
    assert fp in listed
    assert hpcnb.run("list", "--cluster", "kh").returncode == 0  # known from now on


def test_changed_login_key_is_refused_even_with_the_flag(testbed, tmp_path):
    kh = known_hosts_without(tmp_path, topology.LOGIN)
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    with kh.open("a") as fh:
        fh.write(f"{','.join(topology.key_names(topology.LOGIN))} {kind} {blob}\n")
    hpcnb = cli(tmp_path, config_with(tmp_path, kh))
    seed_session(tmp_path / "state", "kh")
    for extra in ((), ("--accept-new-host-key",)):
        proc = hpcnb.run("list", "--cluster", "kh", *extra)
        assert proc.returncode == 5, proc.stderr
        assert "HOST KEY CHANGED" in proc.stderr
        assert host_fingerprint(topology.LOGIN) in proc.stderr


def test_unknown_gateway_key_stops_before_any_prompt(testbed, tmp_path):
    kh = known_hosts_without(tmp_path, topology.GATEWAY)
    hpcnb = cli(tmp_path, testbed)
    hpcnb.env.update(gateway_env(tmp_path, ssh_config_copy(tmp_path, kh)))
    seed_session(tmp_path / "state", "testbed-jump")
    proc = hpcnb.run("list", "--cluster", "testbed-jump")
    assert proc.returncode == 5, proc.stderr
    assert host_fingerprint(topology.GATEWAY) in proc.stderr
    assert topology.GATEWAY.addr in proc.stderr
    assert prompts(tmp_path) == []  # the host key is checked before we authenticate
    proc = hpcnb.run("list", "--cluster", "testbed-jump", "--accept-new-host-key")
    assert proc.returncode == 0, proc.stderr
    assert topology.GATEWAY.addr in kh.read_text()


def test_unknown_key_of_login_behind_the_gateway(testbed, tmp_path):
    kh = known_hosts_without(tmp_path, topology.LOGIN)
    hpcnb = cli(tmp_path, testbed)
    hpcnb.env.update(gateway_env(tmp_path, ssh_config_copy(tmp_path, kh)))
    seed_session(tmp_path / "state", "testbed-jump")
    proc = hpcnb.run("list", "--cluster", "testbed-jump")
    assert proc.returncode == 5, proc.stderr
    assert host_fingerprint(topology.LOGIN) in proc.stderr
    assert topology.LOGIN_INNER_ADDR in proc.stderr
