"""Shared pytest setup: the real testbed fixture, and no silent skips in CI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "testbed"))

from fixtures import in_ci


@pytest.fixture(scope="session")
def testbed():
    """The real cluster (Slurm, sshd, namespaces), brought up once per run, or reused if running."""
    from fixtures import ensure_up

    ensure_up()
    return Path(__file__).resolve().parent / "testbed" / "hpcnb.toml"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # A skipped test is not a passed test: in CI every test must run.
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"
