"""Shared pytest setup: the real testbed fixture, and no silent skips in CI."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "testbed"))

from fixtures import in_ci
from hpcnb_driver import stop_keepers

# Every hpcnb the tests start keeps its connections (hpcnb.keeper) in a folder of this run's own,
# short (a unix socket's path has ~104 bytes) and emptied after each test module: a keeper left behind would
# hold a login for 12 hours.
KEEPERS = Path(tempfile.mkdtemp(prefix="hpcnb-keepers-", dir="/tmp"))
os.environ["HPCNB_RUNTIME_DIR"] = str(KEEPERS)


@pytest.fixture(autouse=True, scope="module")
def _no_keeper_outlives_its_module():
    yield
    stop_keepers(KEEPERS)


@pytest.fixture
def alone():
    """No keeper or OpenSSH master of hpcnb's in this run's folder before the test, none after
    (for tests that count them or cut their connections)."""
    stop_keepers(KEEPERS)
    yield
    stop_keepers(KEEPERS)


def pytest_sessionfinish(session, exitstatus):
    stop_keepers(KEEPERS)
    shutil.rmtree(KEEPERS, ignore_errors=True)


@pytest.fixture
def job(hpcnb):
    """submit(cluster) -> a job id of a running notebook (15 min), through the module's `hpcnb`
    fixture; every job submitted is cancelled after the test."""
    jobs: list[tuple[str, str]] = []

    def submit(cluster: str) -> str:
        jobs.append((cluster, hpcnb.submit(cluster, "--hours", "0.25")))
        return jobs[-1][1]

    yield submit
    for cluster, job_id in jobs:
        hpcnb.run("cancel", job_id, "--cluster", cluster)


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
