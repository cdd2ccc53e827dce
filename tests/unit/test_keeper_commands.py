"""hpcnb.keeper.commands.run_kept: a command whose login died before it started runs once more on
a new login, while the asking command still waits; one that started never runs twice."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from hpcnb.errors import CommandError, CommandNotStarted, SSHError
from hpcnb.keeper.commands import ANSWER_MARGIN_S, run_kept
from hpcnb.remote import CommandResult


class FakeLogin:
    def __init__(self, outcome: BaseException | None, alive: bool = False) -> None:
        self.outcome, self.alive, self.runs = outcome, alive, []

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60.0) -> CommandResult:
        self.runs.append((list(argv), stdin, timeout))
        if self.outcome is not None:
            raise self.outcome
        return CommandResult(argv=list(argv), exit_status=0, stdout="123\n", stderr="")

    def is_alive(self) -> bool:
        return self.alive


def logins(*made: FakeLogin):
    queue = list(made)
    return lambda: queue.pop(0)


def test_never_started_on_a_dead_login_runs_on_a_new_one() -> None:
    dead, fresh = FakeLogin(CommandNotStarted("Timeout opening channel.")), FakeLogin(None)
    result = run_kept(logins(dead, fresh), ["sbatch"], stdin="#!/bin/bash\n", timeout=60, deadline=1000,
                      clock=lambda: 0.0)
    assert result.stdout == "123\n"
    assert fresh.runs == [(["sbatch"], "#!/bin/bash\n", 60)]


STARTED = [CommandError("timed out after 60 s on login1", argv=["sbatch"], exit_status=None),
           SSHError("connection to login1 lost while running `sbatch`")]


@pytest.mark.parametrize("error", STARTED)
def test_a_command_that_started_is_never_run_twice(error: Exception) -> None:
    first, second = FakeLogin(error), FakeLogin(None)
    with pytest.raises(type(error)):
        run_kept(logins(first, second), ["sbatch"], stdin=None, timeout=60, deadline=1000, clock=lambda: 0.0)
    assert second.runs == []


def test_refused_by_a_live_login_is_not_tried_again() -> None:
    live, second = FakeLogin(CommandNotStarted("administratively prohibited"), alive=True), FakeLogin(None)
    with pytest.raises(CommandNotStarted):
        run_kept(logins(live, second), ["squeue"], stdin=None, timeout=60, deadline=1000, clock=lambda: 0.0)
    assert second.runs == []


def test_not_after_the_asking_command_stopped_waiting() -> None:
    dead, fresh = FakeLogin(CommandNotStarted("Timeout opening channel.")), FakeLogin(None)
    with pytest.raises(CommandNotStarted):  # the new login took until the asker's deadline
        run_kept(logins(dead, fresh), ["sbatch"], stdin=None, timeout=60, deadline=100,
                 clock=lambda: 100 - ANSWER_MARGIN_S)
    assert fresh.runs == []


def test_the_second_try_gets_only_the_time_left() -> None:
    dead, fresh = FakeLogin(CommandNotStarted("Timeout opening channel.")), FakeLogin(None)
    run_kept(logins(dead, fresh), ["squeue"], stdin=None, timeout=60, deadline=100,
             clock=lambda: 100 - ANSWER_MARGIN_S - 12)
    assert fresh.runs[0][2] == 12
