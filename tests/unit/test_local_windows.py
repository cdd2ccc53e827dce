"""The laptop side on Windows, simulated: no process groups, and no `local` backend (one clear error)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hpcnb import cli, remote
from hpcnb.cli import sessions as cli_sessions
from hpcnb.errors import CommandError, HpcnbError
from hpcnb.remote import LocalRemote
from hpcnb.schedulers import get_scheduler
from hpcnb.schedulers.local import UNSUPPORTED

WINDOWS_LINE = "hpcnb: error: the local backend needs Linux or macOS (bash, process groups)"


class FakeProc:
    pid = 4242

    def __init__(self) -> None:
        self.killed = False

    def kill(self) -> None:
        self.killed = True

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        return "", ""


def without_process_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "killpg", raising=False)
    monkeypatch.delattr(signal, "SIGKILL", raising=False)


def test_kill_group_falls_back_to_kill_without_killpg(monkeypatch: pytest.MonkeyPatch) -> None:
    without_process_groups(monkeypatch)
    proc = FakeProc()
    remote._kill_group(proc)  # type: ignore[arg-type]
    assert proc.killed


@pytest.mark.skipif(sys.platform == "win32", reason="runs `sleep`")
def test_local_remote_timeout_without_process_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "killpg")  # not SIGKILL too: Popen.kill needs it on POSIX
    with pytest.raises(CommandError, match="timed out"):
        LocalRemote().run(["sleep", "30"], timeout=0.5)


def test_local_submit_argv_refuses_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    local = get_scheduler("local")
    assert local.submit_argv()[-1] == "submit"  # this platform (the suite runs on Linux/macOS)
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(HpcnbError) as info:
        local.submit_argv()
    assert str(info.value) == UNSUPPORTED
    # status and cancel stay available (nothing to show, but no traceback either)
    assert local.status_argv(["1"], None)[-2:] == ["status", "1"]


def test_submit_cluster_local_on_windows_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HPCNB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no user config: built-in local
    monkeypatch.delenv("HPCNB_CONFIG", raising=False)
    monkeypatch.delenv("HPCNB_CLUSTER", raising=False)
    monkeypatch.setattr(cli_sessions, "sigterm_is_interrupt", lambda: None)  # no handler left in pytest

    def must_not_run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise AssertionError("nothing may run on Windows")

    monkeypatch.setattr(LocalRemote, "run", must_not_run)
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(SystemExit) as info:
        cli.main(["submit", "--cluster", "local", "--no-browser", "--no-attach"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [WINDOWS_LINE]
    assert not (tmp_path / "home" / ".hpcnb" / "local").exists()
