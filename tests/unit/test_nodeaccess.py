"""hpcnb.nodeaccess.ssh_argv: the `ssh` line of `hpcnb ssh`, and of `hpcnb code`'s Host entry
(hpcnb.vscode.entry), which VS Code runs later from an environment of its own."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from hpcnb import nodeaccess, vscode


def _cluster() -> SimpleNamespace:
    cfg = SimpleNamespace(known_hosts=None, user="alice", identity_file="/k/id_ed25519")
    return SimpleNamespace(cfg=cfg, name="anvil", remote=None)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    for name in nodeaccess.PINNED_ENV:
        monkeypatch.delenv(name, raising=False)


def _proxy(argv: list[str]) -> str:
    return next(a for a in argv if a.startswith("ProxyCommand=")).partition("=")[2]


def test_the_proxy_command_is_hpcnb_proxy_with_ssh_tokens() -> None:
    argv = nodeaccess.ssh_argv(_cluster(), "node01", [], tty=False, accept_new_host_key=False,
                               hpcnb=("/opt/py 3/bin/python", "-m", "hpcnb"))
    assert _proxy(argv) == "'/opt/py 3/bin/python' -m hpcnb proxy --cluster anvil %h %p"
    assert argv[-3:] == ["-T", "--", "node01"]


def test_hpcnbs_own_settings_are_pinned_for_vs_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # `hpcnb code` run with another config and store: VS Code's later `ssh` must use them too.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPCNB_CONFIG", "configs/hpcnb.toml")
    monkeypatch.setenv("HPCNB_STATE_DIR", "/s/state 1")
    argv = nodeaccess.ssh_argv(_cluster(), "node01", [], tty=False, accept_new_host_key=False,
                               hpcnb=("hpcnb",))
    assert _proxy(argv) == (f"env HPCNB_CONFIG={tmp_path}/configs/hpcnb.toml 'HPCNB_STATE_DIR=/s/state 1' "
                            "hpcnb proxy --cluster anvil %h %p")
    block = vscode.entry("anvil", "7", "node01", argv)
    assert f'ProxyCommand env HPCNB_CONFIG={tmp_path}/configs/hpcnb.toml' in block
