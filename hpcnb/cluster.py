"""hpcnb's Python API, part one: a Cluster, the sessions on it, and submitting a new one.

    from hpcnb import Cluster

    with Cluster("mycluster") as cluster:
        session = cluster.submit(partition="gpu", hours=1)   # -> hpcnb.session.Session
        session.wait_ready()
        with session.tunnel() as tunnel:
            print(tunnel.url)

A Cluster is one cluster's config and scheduler, one connection to its login host (opened when
first needed, shared by everything done through this Cluster), and this machine's record of
sessions (hpcnb.store). Errors are the HpcnbError tree (hpcnb.errors); nothing here prints or
exits. The CLI (hpcnb/cli/) is built on this.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcnb.batch import BatchSystem
from hpcnb.config import ClusterConfig, load_cluster
from hpcnb.errors import JobEnded, JobNotFound, logs_hint
from hpcnb.schedulers import JobStatus, get_scheduler
from hpcnb.store import ENDED, SessionRecord, Store

if TYPE_CHECKING:  # imported where used: `hpcnb list` needs none of them (issue 15: list in 150 ms)
    from hpcnb.handshake import JobFiles
    from hpcnb.remote import Remote
    from hpcnb.request import JobRequest
    from hpcnb.session import Session

LOOK_LIMIT = 200  # session folders asked about when looking on the cluster (the newest)

Notify = Callable[[str], None]


def _ignore(_message: str) -> None:
    return None


class Cluster:
    """One cluster, by its name in the config (None: the default cluster), or a ClusterConfig."""

    def __init__(self, name: str | None = None, *, config: ClusterConfig | None = None,
                 accept_new_host_key: bool = False, notify: Notify | None = None,
                 state_dir: str | Path | None = None, alert: Notify | None = None) -> None:
        self.cfg = config if config is not None else load_cluster(name)
        self.scheduler = get_scheduler(self.cfg.scheduler)
        self.accept_new_host_key = accept_new_host_key
        self.notify: Notify = notify or _ignore  # warnings while waiting or attached, one line each
        self.alert: Notify = alert or _ignore  # the few that also deserve the desktop (walltime)
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._remote: Remote | None = None
        self._store: Store | None = None
        self.batch = BatchSystem(self.scheduler, lambda: self.remote, cluster=self.cfg.name,
                                 user=self.cfg.user, notify=lambda m: self.notify(m))

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def is_local(self) -> bool:
        return self.cfg.scheduler == "local"

    @property
    def kept(self) -> bool:
        """Whether commands go through a keeper (hpcnb.keeper): one login for many commands."""
        return not self.is_local and self.cfg.persist is not None and self.cfg.ssh_backend == "paramiko"

    @property
    def openssh(self) -> bool:
        """Whether the system `ssh` does the logins (hpcnb.openssh): its own ControlMaster keeps them."""
        return not self.is_local and self.cfg.ssh_backend == "openssh"

    # ---- the connection and the store ---------------------------------------------------------

    @property
    def remote(self) -> Remote:
        """The connection to the login host (this machine for `local`), made on first use."""
        if self._remote is None:
            self._remote = self.connect()
        return self._remote

    def connect(self) -> Remote:
        """A new connection to the login host: the tunnel calls this again after a drop."""
        if self.is_local:
            from hpcnb.remote import LocalRemote  # with logging and subprocess: not for `list`

            return LocalRemote()
        if self.openssh:
            from hpcnb.openssh.remote import OpenSSHRemote

            return OpenSSHRemote(self.cfg, accept_new_host_key=self.accept_new_host_key,
                                 notify=self.notify)
        if self.kept:
            from hpcnb.keeper.client import KeptRemote

            return KeptRemote(self.cfg, accept_new_host_key=self.accept_new_host_key)
        from hpcnb.ssh import SSHRemote  # paramiko is slow to import: only when a command needs it

        return SSHRemote.from_config(self.cfg, accept_new_host_key=self.accept_new_host_key)

    @property
    def store(self) -> Store:
        if self._store is None:
            from hpcnb.paths import state_dir

            self._store = Store((self._state_dir or state_dir()) / "sessions.db")
            if self._store.moved_aside is not None:
                self.notify(f"the session store was damaged: kept as {self._store.moved_aside}; "
                            "a new one finds your sessions on the cluster again")
        return self._store

    def close(self) -> None:
        """Close the connection and the store (sessions keep running on the cluster)."""
        remote, self._remote = self._remote, None
        store, self._store = self._store, None
        if remote is not None:
            remote.close()
        if store is not None:
            store.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def files(self, job_id: str) -> JobFiles:
        """Where the job's files are on the cluster (hpcnb.handshake)."""
        from hpcnb.handshake import JobFiles

        return JobFiles(self.cfg.machine, job_id)

    def record(self, status: JobStatus) -> None:
        """A fresh status into this machine's record (a job it does not know is left alone)."""
        self.store.update_status(self.name, status.job_id, state=status.state.value,
                                 node=status.node, time_left_s=status.time_left_s)

    # ---- new sessions --------------------------------------------------------------------------

    def request(self, **values: Any) -> JobRequest:
        """Validate a job's values (partition, hours or time, account, cpus, mem, gpus, name,
        notebook_dir) against this cluster's config: UsageError names the bad one."""
        from hpcnb.request import build_request

        return build_request(self.cfg, **values)

    def script(self, request: JobRequest | None = None, **values: Any) -> str:
        """The job script a submit would send (what `hpcnb submit --dry-run` prints)."""
        from hpcnb.render import render_script

        return render_script(self.cfg, request or self.request(**values), self.scheduler)

    def submit(self, request: JobRequest | None = None, **values: Any) -> Session:
        """Submit a notebook job; the Session (its notebook is not up yet: wait_ready())."""
        from hpcnb.session import Session

        request = request or self.request(**values)
        job_id = self.batch.submit(self.script(request))
        # A job id can come round again: an older job's handshake must not be read as this one's
        # while it is queued. (The job also removes them when it starts.)
        files = self.files(job_id)
        self.remote.run(["rm", "-f", files.connection, files.ended])
        self._remember(job_id, name=request.name, partition=request.partition, state="pending",
                       node=None, time_left_s=request.walltime_seconds)
        return Session(self, job_id, fresh=True)

    def _remember(self, job_id: str, **fields: Any) -> None:
        now = time.time()
        self.store.add(SessionRecord(cluster=self.name, job_id=job_id, scheduler=self.cfg.scheduler,
                                     tunnel=self.cfg.tunnel, submitted_at=now, updated_at=now,
                                     **fields))

    # ---- existing sessions ---------------------------------------------------------------------

    def check_job(self, job_id: str) -> None:
        """A job recorded under another cluster only: say so instead of asking the wrong scheduler."""
        from hpcnb.handshake import check_job_id

        check_job_id(job_id)
        if self.store.get(self.name, job_id) is not None:
            return
        others = [r.cluster for r in self.store.list() if r.job_id == job_id and r.cluster != self.name]
        if others:
            raise JobNotFound(f"job {job_id} is a session of cluster {others[0]!r}, not {self.name!r}",
                              hint=f"add --cluster {others[0]}")

    def status(self, job_id: str) -> JobStatus:
        """The job's status, recorded; JobNotFound if neither the scheduler nor its history knows it."""
        self.check_job(job_id)
        status = self.batch.statuses([job_id]).get(job_id)
        if status is None:
            raise JobNotFound(f"no job {job_id} on cluster {self.name!r}",
                              hint="`hpcnb list --all` shows the sessions this laptop knows")
        self.record(status)
        return status

    def session(self, job_id: str, *, running: bool = False) -> Session:
        """A session already submitted (from this laptop or another). With running, JobEnded when
        it has ended. A session this laptop did not know is recorded."""
        from hpcnb.session import Session

        status = self.status(job_id)
        if running and status.state.is_final:
            raise JobEnded(f"job {job_id} has ended ({status.state.value})",
                           hint=logs_hint(job_id, self.name))
        if self.store.get(self.name, job_id) is None:
            self._remember(job_id, name=status.name, partition=status.partition,
                           state=status.state.value, node=status.node, time_left_s=status.time_left_s)
        return Session(self, job_id, status=status)

    def sessions(self, *, include_ended: bool = False) -> list[SessionRecord]:
        """This laptop's sessions on the cluster, newest first, refreshed by one scheduler query for
        all those still active."""
        self.refresh_sessions()
        return self.store.list(self.name, include_ended=include_ended)

    def refresh_sessions(self) -> None:
        """The store's record of this cluster's sessions brought up to date: one scheduler query
        for all those still active (and, for a store that knows none, a look on the cluster)."""
        if self.store.needs_look(self.name):
            if not self.store.list(self.name, limit=1):  # a new laptop, a lost or damaged store
                self._look_on_cluster()
            self.store.looked(self.name)
        active = self.store.active_job_ids(self.name)
        if active:
            statuses = self.batch.statuses(active)
            for job_id in active:
                status = statuses.get(job_id)
                if status is not None:
                    self.record(status)
                else:  # neither the queue nor the history knows it: it ended long ago
                    self.store.update_status(self.name, job_id, state=ENDED, time_left_s=None,
                                             ended_at=time.time())

    def _look_on_cluster(self) -> None:
        """The running and queued sessions of a store that knows none of this cluster's (another
        laptop's, a lost or damaged store's), found by their session folders on the cluster (the
        job makes ~/.hpcnb/sessions/<machine>/<job id>, whatever its name) and asked about in one
        scheduler query. Ended ones are history, and stay on the cluster (`hpcnb logs`)."""
        from hpcnb import handshake as hs

        folder = f"{hs.SESSIONS_DIR}/{self.cfg.machine}"
        listing = self.remote.run(["ls", "-1t", "--", folder])  # newest first; none: no folder
        ids = [n for n in listing.stdout.split() if hs.JOB_ID_RE.match(n)] if listing.ok else []
        new = ids[:LOOK_LIMIT]  # the store knows none of them (see refresh_sessions)
        statuses = self.batch.statuses(new) if new else {}
        found = [statuses[job_id] for job_id in new
                 if job_id in statuses and not statuses[job_id].state.is_final]
        for status in reversed(found):  # oldest first: `list` shows the newest on top
            self._remember(status.job_id, name=status.name, partition=status.partition,
                           state=status.state.value, node=status.node, time_left_s=status.time_left_s)
        if found:
            self.notify(f"found {len(found)} session(s) on {self.name} that this laptop had not "
                        "recorded")
