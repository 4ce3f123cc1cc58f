"""`gen3d serve --ray`: queued jobs run as Ray tasks instead of in local worker processes.

The server claims queued jobs itself and hands each to a Ray task that does exactly what a local
worker does with a claimed job (`Worker.run`: the `gen3d` command in a child process, heartbeats,
cancel requests, final status), so the queue, progress (events.jsonl), cancel and restart behave
as with local workers. The runs folder must be on a file system every Ray node mounts at the same
path (docs/scale-out.md); a session file there tells the tasks whether their server still runs.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from pathlib import Path

from gen3d.batch.backends import connect_ray
from gen3d.io import atomic_write_bytes
from gen3d.server.jobqueue import STALE_AFTER_S, JobQueue
from gen3d.server.launcher import recover
from gen3d.server.worker import POLL_S, STOP_GRACE_S, Worker

STOP_S = STOP_GRACE_S + 10.0
SESSION_FILE = Path(".gen3d-server") / "ray-session"  # on the shared file system, like the queue


# A server that has not touched its session file for this long is gone; generous, since a shared file
# system may cache file attributes for up to a minute.
SESSION_STALE_S = 4 * STALE_AFTER_S


class RayWorker(Worker):
    """A worker inside a Ray task: it stops its job (at a checkpoint, as on SIGTERM) when the server that
    handed it the job is gone: its session file no longer holds `session`, or (a server killed outright
    leaves the file behind) nobody has touched the file for SESSION_STALE_S. Staleness is timed on this
    node's own clock, from the last change of the file's mtime it saw, so clock skew between nodes and
    the file server does not matter."""

    def __init__(self, runs_dir: Path, session: str, stale_s: float = SESSION_STALE_S):
        super().__init__(runs_dir)
        self.session, self.stale_s = session, stale_s
        self.seen: tuple[float, float] | None = None  # (file mtime, monotonic time it was first seen)

    def orphaned(self) -> bool:
        path = self.runs_dir / SESSION_FILE
        try:
            if path.read_text() != self.session:
                return True
            mtime = path.stat().st_mtime
        except OSError:
            return True
        if self.seen is None or self.seen[0] != mtime:
            self.seen = (mtime, time.monotonic())
        return time.monotonic() - self.seen[1] > self.stale_s


def run_queued(runs_dir: str, session: str, job_id: int) -> str:
    """A Ray task: run one claimed job as a local worker would; returns its final status."""
    worker = RayWorker(Path(runs_dir), session)
    return worker.run(worker.queue.get(job_id))


class RayPool:
    """At most `n` queued jobs at once on the Ray cluster at `address` (None: a local instance)."""

    def __init__(self, runs_dir: Path, n: int, queue: JobQueue, address: str | None):
        self.runs_dir, self.n, self.queue, self.address = runs_dir, n, queue, address
        self.stopped = threading.Event()
        self.running: dict = {}  # Ray ObjectRef -> QueuedJob
        self.thread = threading.Thread(target=self._dispatch, name="gen3d-ray", daemon=True)

    def start(self) -> None:
        self.session = uuid.uuid4().hex
        atomic_write_bytes(self.runs_dir / SESSION_FILE, self.session.encode())
        self.ray = connect_ray(self.address)
        self.task = self.ray.remote(run_queued).options(num_cpus=1, max_retries=0)
        self.thread.start()

    def _dispatch(self) -> None:
        while not self.stopped.wait(POLL_S):
            os.utime(self.runs_dir / SESSION_FILE)  # alive: see RayWorker.orphaned
            recover(self.queue, self.runs_dir)
            self._collect(timeout=0)
            while len(self.running) < self.n and not self.stopped.is_set():
                job = self.queue.claim(os.getpid())  # the server's pid: the job lives while it does
                if job is None:
                    break
                self.running[self.task.remote(str(self.runs_dir), self.session, job.id)] = job

    def _collect(self, timeout: float) -> None:
        """Forget finished tasks; a task that failed outside its job (the worker died) fails the job."""
        if not self.running:
            return
        done, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        for ref in done:
            job = self.running.pop(ref)
            try:
                self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - recorded on the job
                self.queue.finish(job.id, "failed", None, f"Ray task failed: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """End the session: the tasks stop their jobs at a checkpoint (interrupted); then leave Ray."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.thread.join(timeout=STOP_S)
        (self.runs_dir / SESSION_FILE).unlink(missing_ok=True)
        try:
            self._collect(timeout=STOP_S)
        except Exception as exc:  # noqa: BLE001 - shutting down anyway; the next start recovers the jobs
            print(f"gen3d serve: stopping Ray jobs: {exc}", file=sys.stderr)
        self.ray.shutdown()
