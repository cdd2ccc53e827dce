"""Keeping a tunnel's SSH connection: re-made with backoff when it drops, never on a refused login.

The tunnel's listener stays up while this reconnects, so the browser tab keeps working. A host
key error or a refused login is never retried: a retry would not change the answer, and under MFA
every retry would be another prompt.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from hpcnb.errors import AuthenticationFailed, HostKeyError, SSHError
from hpcnb.ssh.remote import CONNECTION_ERRORS
from hpcnb.tunnel import UPSTREAM_ERRORS, Notify, Upstream

# What making or using a connection may raise when the network or the far end fails.
RETRYABLE = (*UPSTREAM_ERRORS, *CONNECTION_ERRORS)


def _ignore(_message: str) -> None:
    return None


class Connection(Protocol):
    """What ReconnectingUpstream needs of a connection (SSHRemote fits)."""

    def is_alive(self) -> bool: ...
    def close(self) -> None: ...


C = TypeVar("C", bound=Connection)


class ReconnectingUpstream(Generic[C]):
    """An `open_upstream` for Tunnel that re-makes a dead connection with backoff.

    `connect()` makes a connection (e.g. SSHRemote.connect + jump), `open(conn)` opens one
    channel on it. When the connection is dead, it is re-made with a delay of 0.5 s doubling to
    8 s, for at most `max_total` seconds, then SSHError (the tunnel keeps listening: the next
    browser connection tries again). Host key errors are never retried.
    """

    errors = RETRYABLE  # what the tunnel's pumps treat as "this upstream failed"

    def __init__(
        self,
        connect: Callable[[], C],
        open: Callable[[C], Upstream],
        *,
        notify: Notify | None = None,
        connection: C | None = None,
        initial_delay: float = 0.5,
        max_delay: float = 8.0,
        max_total: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connect, self.open = connect, open
        self.notify = notify or _ignore
        self.connection = connection
        self.initial_delay, self.max_delay, self.max_total = initial_delay, max_delay, max_total
        self.sleep = sleep
        self._lock = threading.Lock()  # one reconnect at a time; other openers wait for it

    def __call__(self) -> Upstream:
        conn = self._alive_connection()
        try:
            return self.open(conn)
        except RETRYABLE:
            if conn.is_alive():
                raise  # the far end refused; the connection itself is fine
        return self.open(self._alive_connection())

    def _alive_connection(self) -> C:
        with self._lock:
            conn = self.connection
            if conn is not None and conn.is_alive():
                return conn
            if conn is not None:
                self.notify("connection lost, reconnecting")
                with contextlib.suppress(*RETRYABLE):
                    conn.close()
            self.connection = None
            self.connection = self._reconnect(first=conn is None)
            return self.connection

    def _reconnect(self, *, first: bool) -> C:
        delay, started, attempt, waited = self.initial_delay, time.monotonic(), 0, 0.0
        while True:
            attempt += 1
            try:
                conn = self.connect()
            except (HostKeyError, AuthenticationFailed):
                raise  # a retry would not change the answer, and under MFA it would prompt again
            except RETRYABLE as exc:
                elapsed = max(time.monotonic() - started, waited)
                if elapsed + delay > self.max_total:
                    raise SSHError(
                        f"could not connect in {elapsed:.0f} s ({attempt} attempts): {exc}"
                    ) from exc
                self.notify(f"connect attempt {attempt} failed ({exc}); retrying in {delay:g} s")
                self.sleep(delay)
                waited += delay
                delay = min(delay * 2, self.max_delay)
                continue
            if not first:
                self.notify(f"reconnected after {attempt} attempt{'s' if attempt > 1 else ''}")
            return conn
