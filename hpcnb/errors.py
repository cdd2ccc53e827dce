"""Errors that carry their evidence, and the exit code each maps to.

Library code raises these; only the CLI (hpcnb/cli/) turns them into one line on stderr and an
exit code. Nothing outside hpcnb/cli/ calls sys.exit or prints (hpcnb.localjob, a small program
of its own, prints its answers).
"""

from __future__ import annotations

from collections.abc import Sequence


def last_line(text: str) -> str:
    """The last non-blank line of a command's output, stripped: what a one-line error quotes."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def logs_hint(job_id: str, cluster: str) -> str:
    """Where to look when a job failed: its output, on the right cluster."""
    return f"hpcnb logs {job_id} --cluster {cluster}"


class HpcnbError(Exception):
    """Base of every error hpcnb reports to the user. `exit_code` is the process exit status."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(HpcnbError):
    """A config file is missing, unreadable, or has an unknown key or a wrong type."""

    exit_code = 3


class UsageError(HpcnbError):
    """A flag value that cannot be used: hours 0, a partition name with a quote, a taken port."""

    exit_code = 2


class SSHError(HpcnbError):
    """Could not reach or authenticate to a host."""

    exit_code = 4


class CommandNotStarted(SSHError):
    """The connection failed before a command's channel opened: the command never ran, so it is
    safe to run it again on a new connection (a submit included)."""


class ConnectionLost(SSHError):
    """The connection dropped while a command ran: it may or may not have run, so only a command
    that changes nothing (a queue query) is run again on a new connection."""


class AuthenticationFailed(SSHError):
    """The host answered but refused our login (key, passphrase or one-time code).

    Never retried by itself: under MFA every retry would be another prompt.
    """


class HostKeyError(SSHError):
    """A host presented an unknown or changed key. Never silently accepted."""

    exit_code = 5


class CommandError(HpcnbError):
    """A command on the login host (or locally) failed. Carries argv, exit code and stderr."""

    exit_code = 6

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str],
        exit_status: int | None,
        stderr: str = "",
        hint: str | None = None,
    ) -> None:
        detail = f"{message}: `{' '.join(argv)}` exited {exit_status}"
        if last_line(stderr):
            detail += f": {last_line(stderr)}"
        super().__init__(detail, hint=hint)
        self.argv = list(argv)
        self.exit_status = exit_status
        self.stderr = stderr


class SchedulerUnavailable(CommandError):
    """The scheduler's controller did not answer. A job's state is UNKNOWN, never 'gone'."""

    exit_code = 7


class JobNotFound(HpcnbError):
    """No such job for this cluster, in the scheduler or in the local store."""

    exit_code = 8


class JobEnded(HpcnbError):
    """The job ended (failed, cancelled, timed out) before or while the notebook was in use."""

    exit_code = 9


class JobRequeued(JobEnded):
    """The scheduler put the running job back in its queue (scontrol requeue, preemption, a node
    failure with requeue): its notebook stopped and will start again, perhaps on another node.
    `stale_ended` is the `ended` file the stopped notebook left (the next run removes it)."""

    def __init__(self, message: str, *, stale_ended: bytes | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.stale_ended = stale_ended


class StartTimeout(HpcnbError):
    """The notebook did not become ready in the allotted time."""

    exit_code = 10


class TunnelError(HpcnbError):
    """The local end of the tunnel could not be set up (for instance the port is taken)."""

    exit_code = 11


class KeeperError(HpcnbError):
    """The kept connection (hpcnb.keeper) cannot be started, reached or used."""

    exit_code = 12
