"""Desktop notifications on the testbed (hpcnb.desktop), through a recording command in place of
notify-send ($HPCNB_NOTIFY_COMMAND): a queued job that starts, the walltime warning; never the
token; --no-notify and `notify = false` silence them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fixtures import ssh
from hpcnb_driver import Background, Hpcnb, derived_config

pytestmark = pytest.mark.cluster


def _recorder(tmp_path: Path) -> tuple[str, Path]:
    log = tmp_path / "notifications.log"
    script = tmp_path / "record-notification"
    script.write_text(f'#!/bin/sh\nprintf "%s | %s\\n" "$1" "$2" >> {log}\n')
    script.chmod(0o755)
    return str(script), log


def _wait_lines(log: Path, n: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= n:
            return lines
        time.sleep(0.2)
    return log.read_text().splitlines() if log.exists() else []


def test_a_queued_job_that_starts_and_the_walltime_warning(testbed, tmp_path):
    config = derived_config(tmp_path / "hpcnb.toml", testbed, {
        "held": ("testbed", {"extra_directives": ["--hold"]})})
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    command, log = _recorder(tmp_path)
    hpcnb.env["HPCNB_NOTIFY_COMMAND"] = command
    submit = Background(hpcnb, "submit", "--cluster", "held", "--no-browser", "--time", "00:05:00")
    job_id = None
    try:
        job_id = submit.wait_for(r"submitted job (\d+)", 60).group(1)
        submit.wait_for(r"queued", 30)
        assert not log.exists()  # nothing while it waits
        assert ssh(f"scontrol release {job_id}").returncode == 0
        url = submit.wait_for(r"^(http://127\.0\.0\.1:\d+/lab\?token=\S+)", 120).group(1)
        lines = _wait_lines(log, 2)  # started, and the warning (5 min left < walltime_warning 10)
        assert any(f"job {job_id} started on node0" in ln for ln in lines), lines
        assert any("reaches its time limit" in ln for ln in lines), lines
        token = url.split("token=")[1]
        assert token not in log.read_text()
    finally:
        submit.stop()
        if job_id:
            hpcnb.run("cancel", job_id, "--cluster", "held")


def test_no_notify_and_config_false_are_silent(testbed, tmp_path):
    config = derived_config(tmp_path / "hpcnb.toml", testbed, {
        "quiet": ("testbed", {"notify": False}), "loud": ("testbed", {})})
    hpcnb = Hpcnb(tmp_path / "state", config=config)
    command, log = _recorder(tmp_path)
    hpcnb.env["HPCNB_NOTIFY_COMMAND"] = command
    for cluster, flags in (("quiet", ()), ("loud", ("--no-notify",))):
        attach = Background(hpcnb, "submit", "--cluster", cluster, "--no-browser", "--time", "00:05:00",
                            *flags)
        try:
            job_id = attach.wait_for(r"submitted job (\d+)", 60).group(1)
            attach.wait_for(r"^http://127\.0\.0\.1:\d+/lab\?token=", 120)
            time.sleep(3)
        finally:
            attach.stop()
            hpcnb.run("cancel", job_id, "--cluster", cluster)
    assert not log.exists(), log.read_text()
