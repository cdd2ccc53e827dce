"""hpcnb.desktop: $HPCNB_NOTIFY_COMMAND replaces the platform's tool; text stays data."""

from __future__ import annotations

import time

from hpcnb import desktop


def test_the_override_command_gets_title_and_body_as_arguments(monkeypatch):
    monkeypatch.setenv(desktop.COMMAND_ENV, "/opt/rec --flag 'two words'")
    argv, extra = desktop.command("t $(x)", "b `y`", platform="linux")
    assert argv == ["/opt/rec", "--flag", "two words", "t $(x)", "b `y`"] and extra == {}


def test_notify_runs_it_in_the_background_and_never_raises(monkeypatch, tmp_path):
    log = tmp_path / "log"
    script = tmp_path / "rec"
    script.write_text(f'#!/bin/sh\nprintf "%s|%s\\n" "$1" "$2" >> {log}\n')
    script.chmod(0o755)
    monkeypatch.setenv(desktop.COMMAND_ENV, str(script))
    desktop.notify("hpcnb", "ready")
    deadline = time.monotonic() + 5
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.read_text() == "hpcnb|ready\n"
    monkeypatch.setenv(desktop.COMMAND_ENV, str(tmp_path / "missing"))
    desktop.notify("hpcnb", "ignored")  # a missing program: nothing raised
