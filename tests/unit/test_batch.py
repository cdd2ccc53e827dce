"""BatchSystem: what a connection dropped under a command means for each kind of command."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fakes import captured

from hpcnb.batch import BatchSystem
from hpcnb.errors import ConnectionLost
from hpcnb.remote import CommandResult
from hpcnb.schedulers import JobState, get_scheduler

SQUEUE = captured("slurm_squeue_22.05.txt")


class DropsFirst:
    """A Remote whose first `drops` commands lose their connection mid-run, then answer `stdout`."""

    def __init__(self, stdout: str, drops: int = 1) -> None:
        self.stdout, self.drops, self.calls = stdout, drops, []

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        self.calls.append(list(argv))
        if len(self.calls) <= self.drops:
            raise ConnectionLost(f"connection to login1 lost while running `{argv[0]}`")
        return CommandResult(list(argv), 0, self.stdout, "")


def batch(remote: DropsFirst, notes: list[str]) -> BatchSystem:
    return BatchSystem(get_scheduler("slurm"), lambda: remote, cluster="tb", notify=notes.append)


def test_a_status_query_whose_connection_dropped_is_asked_once_more() -> None:
    remote, notes = DropsFirst(SQUEUE), []
    status = batch(remote, notes).statuses(["1"])
    assert status["1"].state is JobState.RUNNING
    assert [argv[0] for argv in remote.calls] == ["squeue", "squeue"]
    assert notes == ["the connection to tb's login host dropped during `squeue`; asking again"]


def test_a_second_drop_is_the_error() -> None:
    remote = DropsFirst(SQUEUE, drops=2)
    with pytest.raises(ConnectionLost):
        batch(remote, []).statuses(["1"])
    assert len(remote.calls) == 2


@pytest.mark.parametrize("change", ["submit", "cancel"])
def test_a_command_that_changes_the_cluster_is_never_run_twice(change: str) -> None:
    remote = DropsFirst("123\n")
    system = batch(remote, [])
    with pytest.raises(ConnectionLost):
        system.submit("#!/bin/bash\n") if change == "submit" else system.cancel("123")
    assert len(remote.calls) == 1
