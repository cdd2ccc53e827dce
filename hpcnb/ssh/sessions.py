"""The session channels one login's commands hold, and waiting for one to end when sshd says no more.

sshd allows MaxSessions session channels per connection (10 by default, sshd_config(5)) and
refuses the next at once ("no more sessions" in its log; CHANNEL_OPEN_FAILURE to us). A kept
login (hpcnb.keeper) runs the commands of every hpcnb process of a cluster on one connection: a
`list` and a few `submit`s polling at once reach 10 at a site that keeps the default. A refusal
while commands of ours hold sessions is theirs to end, within seconds: so the command waits for
one of them and tries again, until its own deadline. A refusal while none is held is the
server's answer and is told at once; sessions that may last for hours (a shell, SFTP) wait for a
session to open like a command but are not counted as held once open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

SETTLE_S = 2.0  # how long after our last session ended a refusal may still be sshd catching up
PAUSE_S = 0.1  # the pause before trying again then


class SessionSlots:
    """Counts the sessions our commands hold or are opening; tells a refused one whether to wait."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._changed = threading.Condition()
        self._clock = clock
        self.held = 0  # open, or being opened (a refusal must see the sessions just granted)
        self.ended = 0  # sessions ended so far: a refused command waits for this to grow
        self._last_end = -SETTLE_S

    def opening(self) -> int:
        """Before an open: the count of ended sessions to give refused() if it is refused."""
        with self._changed:
            self.held += 1
            return self.ended

    def lasting(self) -> None:
        """The session opened after opening() may stay open for hours (a shell, SFTP): no longer
        counted as held, so a refusal does not wait for it to end."""
        with self._changed:
            self.held -= 1
            self._changed.notify_all()

    def closed(self, lasting: bool = False) -> None:
        """A session opened after opening() has ended (or its open failed for another reason);
        `lasting` if lasting() was said of it."""
        with self._changed:
            if not lasting:
                self.held -= 1
            self.ended += 1
            self._last_end = self._clock()
            self._changed.notify_all()

    def refused(self, since: int, deadline: float) -> bool:
        """The open after opening() was refused: whether to try again (opening() first). Yes once
        another session of ours has ended since, waiting until `deadline` (the clock's time) for
        that. Just after one of ours ended, after a short pause whether others are held or not:
        sshd frees a closed session in a later pass of its loop, not as it reads our CLOSE, so an
        open right behind the CLOSE can still be refused (loopback sshd, MaxSessions 3, 12
        threads: 1 run in 3 before the pause)."""
        with self._changed:
            self.held -= 1
            self._changed.notify_all()
            if self.ended > since:
                return True
            if self._clock() - self._last_end < SETTLE_S:  # sshd may not have freed it yet
                return self._changed.wait(PAUSE_S) or self._clock() < deadline
            self._changed.wait_for(lambda: self.ended > since or self.held == 0,
                                   timeout=max(0.0, deadline - self._clock()))
            return self.ended > since
