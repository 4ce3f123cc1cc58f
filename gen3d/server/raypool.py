"""`gen3d serve --ray`: queued jobs run as Ray tasks instead of in local worker processes.

The server claims queued jobs itself and hands each to a Ray task that does exactly what a local
worker does with a claimed job (`Worker.run`: the `gen3d` command in a child process, heartbeats,
cancel requests, final status), so the queue, progress (events.jsonl), cancel and restart behave
as with local workers. The runs folder must be on a file system every Ray node mounts at the same
path (docs/scale-out.md).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from gen3d.batch.backends import connect_ray
from gen3d.server.jobqueue import JobQueue
from gen3d.server.launcher import recover
from gen3d.server.worker import POLL_S, STOP_GRACE_S, Worker

STOP_S = STOP_GRACE_S + 10.0


def run_queued(runs_dir: str, job_id: int) -> str:
    """A Ray task: run one claimed job as a local worker would; returns its final status."""
    worker = Worker(Path(runs_dir))
    return worker.run(worker.queue.get(job_id))


class RayPool:
    """At most `n` queued jobs at once on the Ray cluster at `address` (None: a local instance)."""

    def __init__(self, runs_dir: Path, n: int, queue: JobQueue, address: str | None):
        self.runs_dir, self.n, self.queue, self.address = runs_dir, n, queue, address
        self.stopped = threading.Event()
        self.running: dict = {}  # Ray ObjectRef -> QueuedJob
        self.thread = threading.Thread(target=self._dispatch, name="gen3d-ray", daemon=True)

    def start(self) -> None:
        self.ray = connect_ray(self.address)
        self.task = self.ray.remote(run_queued).options(num_cpus=1, max_retries=0)
        self.thread.start()

    def _dispatch(self) -> None:
        while not self.stopped.wait(POLL_S):
            recover(self.queue, self.runs_dir)
            self._collect(timeout=0)
            while len(self.running) < self.n and not self.stopped.is_set():
                job = self.queue.claim(os.getpid())  # the server's pid: the job lives while it does
                if job is None:
                    break
                self.running[self.task.remote(str(self.runs_dir), job.id)] = job

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
        """Stop running jobs at a checkpoint (Ray's cancel interrupts the task's worker), then leave Ray."""
        self.stopped.set()
        self.thread.join(timeout=STOP_S)
        for ref in list(self.running):
            self.ray.cancel(ref)
        try:
            self._collect(timeout=STOP_S)
        except Exception as exc:  # noqa: BLE001 - shutting down anyway; the next start recovers the jobs
            print(f"gen3d serve: stopping Ray jobs: {exc}", file=sys.stderr)
        self.ray.shutdown()
