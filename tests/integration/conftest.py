"""Fixtures for the loopback integration tests: a real sshd (see sshd_fixture.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sshd_fixture import Sshd, running_sshd


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    with running_sshd() as server:
        yield server
