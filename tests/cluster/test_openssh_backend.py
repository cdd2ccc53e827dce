"""The OpenSSH backend (ssh_backend = "openssh", hpcnb.openssh) end to end on the testbed: the system
`ssh` does every login, riding one ControlMaster; tunnels by `ssh -O forward` (direct) or an `ssh -N`
through the master to the node (node-ssh, socket: OpenSSH forwards to the unix socket itself).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from fixtures import gateway_env, prompts, seed_session
from hpcnb_driver import Hpcnb, keepers_folder

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("alone")]

CLUSTERS = ["testbed-openssh", "testbed-openssh-node-ssh", "testbed-openssh-socket"]


@pytest.fixture
def hpcnb(testbed, tmp_path) -> Hpcnb:
    return Hpcnb(tmp_path / "state", config=testbed)


def _masters() -> list[str]:
    return sorted(p.name for p in keepers_folder().glob("ssh-*") if p.is_socket())


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_submit_attach_kernel_list_cancel(hpcnb, cluster):
    job_id = hpcnb.submit(cluster, "--hours", "0.5")
    try:
        with hpcnb.attach(job_id, cluster) as attached:
            kernel = attached.start_kernel()
            assert attached.execute(kernel, "21*2") == "42"
            [row] = [r for r in hpcnb.list_json(cluster) if r["job_id"] == job_id]
            assert row["state"] == "running" and row["node"] in {"node01", "node02"}
        with hpcnb.attach(job_id, cluster) as attached:  # detach and attach again: state kept
            assert attached.execute(kernel, "21*2 + 1") == "43"
        logs = hpcnb.run("logs", job_id, "--cluster", cluster)
        assert logs.returncode == 0, logs.stderr
    finally:
        cancelled = hpcnb.run("cancel", job_id, "--cluster", cluster)
    assert cancelled.returncode == 0, cancelled.stderr
    [row] = [r for r in hpcnb.list_json(cluster, "--all") if r["job_id"] == job_id]
    assert row["state"] == "cancelled"
    # One master for the route, in hpcnb's private folder; no keeper process of hpcnb's own.
    assert len(_masters()) == 1
    assert not list(keepers_folder().glob("*.json"))


def test_doctor_names_the_backend_and_openssh_version(hpcnb):
    proc = hpcnb.run("doctor", "--cluster", "testbed-openssh", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [ssh] = [c for c in json.loads(proc.stdout)["checks"] if c["name"] == "ssh"]
    version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.split(",")[0]
    assert "backend openssh" in ssh["detail"] and version.split()[0] in ssh["detail"], ssh


def test_through_the_mfa_gateway_one_code_for_many_commands(testbed, tmp_path):
    """ProxyJump through the gateway (publickey + TOTP): ssh's own prompt goes to HPCNB_ASKPASS
    (SSH_ASKPASS_REQUIRE=force); the master makes later commands ask nothing."""
    state = tmp_path / "state"
    hpcnb = Hpcnb(state, testbed, home=tmp_path)
    hpcnb.env.update(gateway_env(tmp_path))
    for job in ("900001", "900002", "900003"):
        seed_session(state, "testbed-openssh-jump", job)
        proc = hpcnb.run("list", "--cluster", "testbed-openssh-jump")
        assert proc.returncode == 0, proc.stderr
    asked = prompts(tmp_path)
    assert len(asked) == 1 and "One-time password" in asked[0], asked


def test_host_keys_stay_strict(testbed, tmp_path):
    """An unknown login host key is refused (exit 5), never accepted silently."""
    known = tmp_path / "known_hosts"
    known.write_text("")
    from hpcnb_driver import derived_config

    config = derived_config(tmp_path / "hpcnb.toml", testbed, {
        "openssh-unknown-key": ("testbed-openssh", {"known_hosts": str(known)})})
    hpcnb = Hpcnb(tmp_path / "state", config=config, home=tmp_path)
    hpcnb.env["HPCNB_SSH_CONFIG"] = str(tmp_path / "no-ssh-config")
    seed_session(tmp_path / "state", "openssh-unknown-key")
    proc = hpcnb.run("list", "--cluster", "openssh-unknown-key")
    assert proc.returncode == 5, proc.stderr
    assert "--accept-new-host-key" in proc.stderr
    proc = hpcnb.run("doctor", "--cluster", "openssh-unknown-key", "--accept-new-host-key")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "10.213.0.2" in known.read_text()


def test_rides_the_users_own_live_master_and_asks_nothing(testbed, tmp_path):
    """The user opened a ControlMaster in the morning (their ssh config's ControlPath): hpcnb's
    commands go through it, with no login and no prompt of their own."""
    from testbed import topology, totp

    control = tmp_path / "cm"
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n    ControlPath {control}\n\n" + topology.SSH_CONFIG.read_text())
    env = {**gateway_env(tmp_path, config), "HOME": str(tmp_path)}
    askpass = tmp_path / "morning-askpass"
    askpass.write_text(f"#!/bin/sh\necho {totp.next_code()}\n")
    askpass.chmod(0o700)
    morning = subprocess.run(
        ["ssh", "-F", str(config), "-M", "-N", "-f", "-o", "ControlPersist=300", "tb-login"],
        env={**env, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"},
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert morning.returncode == 0, morning.stderr
    try:
        state = tmp_path / "state"
        hpcnb = Hpcnb(state, testbed, home=tmp_path)
        hpcnb.env.update(env)
        for job in ("900011", "900012"):
            seed_session(state, "testbed-openssh-jump", job)
            proc = hpcnb.run("list", "--cluster", "testbed-openssh-jump")
            assert proc.returncode == 0, proc.stderr
        assert prompts(tmp_path) == []  # hpcnb asked nothing: the user's master carried it all
        doctor = hpcnb.run("doctor", "--cluster", "testbed-openssh-jump")
        assert f"your ControlMaster at {control}" in doctor.stdout, doctor.stdout + doctor.stderr
        assert not _masters()  # and started no master of its own
    finally:
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", "tb-login"], capture_output=True,
                       timeout=30, env=env)
