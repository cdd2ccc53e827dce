"""hpcnb's Python API, part two: one notebook session (a job) on a Cluster (hpcnb.cluster).

    session.wait_ready()              # until Jupyter answers: its handshake
    with session.tunnel() as tunnel:  # 127.0.0.1 -> the notebook; tunnel.url carries the token
        tunnel.hold()                 # serve until Ctrl-C, or JobEnded when the job ends
    session.logs()                    # the job's output, chunk by chunk
    session.cancel()

Every wait goes through one JobWatcher (hpcnb.watcher); every status learned is recorded in the
cluster's store. Nothing here prints or exits.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from hpcnb import attach
from hpcnb import handshake as hs
from hpcnb.errors import HpcnbError, JobRequeued
from hpcnb.schedulers import JobStatus
from hpcnb.watcher import JobWatcher, WaitEvent

if TYPE_CHECKING:
    from hpcnb.cluster import Cluster


def _ignore(_event: WaitEvent) -> None:
    return None


class Session:
    """A job on `cluster`. `status` is the last one learned (None before the first query)."""

    def __init__(self, cluster: Cluster, job_id: str, *, status: JobStatus | None = None,
                 fresh: bool = False) -> None:
        self.cluster = cluster
        self.files = cluster.files(job_id)  # checks the job id first
        self.job_id = self.files.job_id
        self.status = status
        self._fresh = fresh  # just submitted: nothing of it can be up yet
        self._handshake: hs.Handshake | None = None
        self._stale: tuple[str, bytes | None] | None = None  # a requeued run's token, `ended` file

    def __repr__(self) -> str:
        return f"Session({self.cluster.name!r}, {self.job_id!r})"

    @property
    def node(self) -> str | None:
        """The node the scheduler names, else the one the notebook's handshake named."""
        if self.status and self.status.node:
            return self.status.node
        return self._handshake.node if self._handshake else None

    def _keep(self, status: JobStatus) -> None:
        if status.node is None and self.status is not None:
            status = replace(status, node=self.status.node)  # an ended job names no node
        self.status = status

    def _record(self, status: JobStatus) -> None:
        self._keep(status)
        self.cluster.record(status)

    def watcher(self) -> JobWatcher:
        cluster = self.cluster
        return JobWatcher(self.files, cluster.batch, lambda: cluster.remote,
                          start_timeout=cluster.cfg.start_timeout, record=self._record,
                          notify=cluster.notify, alert=cluster.alert)

    def refresh(self) -> JobStatus:
        """Ask the scheduler now (recorded)."""
        status = self.cluster.status(self.job_id)  # recorded there
        self._keep(status)
        return status

    def wait_ready(self, on_event: Callable[[WaitEvent], None] = _ignore) -> hs.Handshake:
        """Until the notebook answers: its handshake (at once when it already does). on_event sees
        each step of a wait (queued with the reason and expected start, starting, ready)."""
        remote = self.cluster.remote
        if not self._fresh and self._stale is None:
            found = hs.read_handshake(remote, self.files)
            if found is not None and hs.read_ended(remote, self.files) is False:
                self._handshake = found
                return found
        self._handshake = self.watcher().wait_ready(on_event, stale=self._stale)
        self._stale = None
        self._fresh = False
        return self._handshake

    def _far(self, handshake: hs.Handshake) -> attach.Far:
        cluster = self.cluster
        if cluster.is_local:
            return attach.local_far(handshake, cluster.remote)
        if cluster.kept or cluster.openssh:  # a keeper, or ssh's master, forwards for us
            return attach.forwarded_far(handshake, cluster.remote, self.node)
        return attach.ssh_far(handshake, cluster.remote, cluster.connect, self.node,
                              accept_new_host_key=cluster.accept_new_host_key, notify=cluster.notify)

    @contextlib.contextmanager
    def tunnel(self, port: int | None = None, extra_ports: Sequence[tuple[int, int]] = ()
               ) -> Iterator[attach.OpenTunnel]:
        """A tunnel on 127.0.0.1 (`port`, or a free one) to the notebook, which answers through it
        before this yields; closed on leaving. Waits for the notebook first if needed.
        extra_ports: (node port, local port or 0) pairs forwarded beside it the same way."""
        cluster = self.cluster
        handshake = self._handshake or self.wait_ready()
        far = self._far(handshake)
        watcher = self.watcher()

        def watch(stop: threading.Event, remote: Callable[[], object]) -> None:
            try:
                watcher.watch_attached(stop, remote, walltime_end=handshake.walltime_end,  # type: ignore[arg-type]
                                       warn_before=cluster.cfg.walltime_warning)
            except JobRequeued as requeued:  # the next wait_ready waits for the new run
                self._handshake, self._stale = None, (handshake.token, requeued.stale_ended)
                raise

        with attach.tunnel(handshake, far, port=port, notify=cluster.notify, watch=watch) as opened:
            opened_extra: list[tuple[attach.Listening, attach.Far]] = []
            try:
                for node_port, local_port in extra_ports:
                    extra_far = self._far(attach.port_handshake(handshake, node_port))
                    opened_extra.append((extra_far.listen(local_port, cluster.notify), extra_far))
                    opened.extra[node_port] = opened_extra[-1][0].port
                cluster.store.set_local_port(cluster.name, self.job_id, opened.local_port, opened.extra)
                yield opened
            finally:
                for listening, extra_far in opened_extra:
                    listening.stop()
                    extra_far.close()

    def cancel(self) -> JobStatus:
        """Cancel the job and wait (briefly) until the scheduler shows it ended; its last status."""
        status = self.refresh()
        if status.state.is_final:
            return status
        self.cluster.batch.cancel(self.job_id)
        self.status = self.watcher().wait_final(status)
        return self.status

    def logs(self, *, follow: bool = False) -> Iterator[bytes]:
        """The job's output; with follow, new output as it comes until the job's notebook ends."""
        self.cluster.check_job(self.job_id)
        if follow:
            yield from self.watcher().follow_log()
            return
        data = hs.read_log(self.cluster.remote, self.files)
        if data is None:
            raise HpcnbError(f"job {self.job_id} has no output yet ({self.refresh().state.value})")
        if data:
            yield data
