"""Threads kept for the tunnel's next blocking work (a pump, a send that waits, a reconnect)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

# How long a pump thread with nothing to do waits for the next connection before it ends.
WORKER_IDLE_S = 60.0


class Workers:
    """Threads kept for the next connection's pumps instead of two new threads per connection.

    Starting and ending a thread costs ~0.15 ms of CPU here, and a connection needs two: with paramiko's
    channel open (0.45 ms) and close (0.3-0.4 ms) that was most of the 1.3 ms a connection cost. A
    JupyterLab load over 100 new connections (bench/run.py, 313 requests): CPU of the tunnel 0.24 ->
    0.18 s on a loopback sshd (medians of 14), 0.22-0.27 -> 0.17-0.19 s on the testbed (5 rounds).
    No cap: every open connection holds its two pumps (a websocket for hours), so a cap would refuse
    connections; an idle worker ends after WORKER_IDLE_S.
    """

    def __init__(self, idle_s: float = WORKER_IDLE_S) -> None:
        self.idle_s = idle_s
        self._jobs: queue.SimpleQueue[tuple[Callable[..., object], tuple[object, ...]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a job that no queued job has claimed yet

    def run(self, fn: Callable[..., object], *args: object) -> None:
        """Call fn(*args) in a worker thread: an idle one, or a new one if none is idle."""
        self._jobs.put((fn, args))
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # one waiting worker will take it
                return
        threading.Thread(target=self._work, name="tunnel-pump", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                fn, args = self._jobs.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # not claimed meanwhile: leave
                        self._idle -= 1
                        return
                continue  # run() counted on this worker for a job just queued: take it
            fn(*args)
            with self._lock:
                self._idle += 1


WORKERS = Workers()  # the process's: every tunnel's
