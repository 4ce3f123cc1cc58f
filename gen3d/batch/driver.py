"""`gen3d batch`'s driver: submit every unfinished job to the backend, keep `batch.json` current, and
report progress (jobs done / failed / running, ETA from the stage estimates) to a listener.

The driver holds no state that the batch folder does not: killed at any point, the same command
re-reads the run folders, skips finished jobs and resumes the others from their checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path

from gen3d.batch.backends import Backend, BackendConfig, open_backend, plan_slots
from gen3d.batch.folder import BatchFolder
from gen3d.batch.specs import JobSpec, validate
from gen3d.batch.task import Task

POLL_S = 1.0  # how often running jobs' progress is read from their run folders


@dataclass
class Progress:
    """The batch at one moment, for a progress bar."""

    total: int
    counts: dict[str, int]
    eta_s: float | None

    @property
    def finished(self) -> int:
        return self.counts["done"] + self.counts["failed"]


def eta_seconds(folder: BatchFolder, slots: int) -> float | None:
    """Remaining stage estimates over the slots, scaled by how finished jobs compared to theirs."""
    done = [j for j in folder.jobs if j["status"] == "done"]
    estimated = sum(j["estimated_seconds"] for j in done)
    scale = sum(j["seconds"] for j in done) / estimated if done and estimated > 0 else 1.0
    remaining = sum(j["estimated_seconds"] if j.get("remaining_estimate") is None else j["remaining_estimate"]
                    for j in folder.jobs if j["status"] not in ("done", "failed"))
    return round(remaining * scale / max(slots, 1), 1)


def open_batch(specs: list[JobSpec], out: Path, source: Path) -> BatchFolder:
    """The batch folder for `specs` (validated already by `read_specs`), created or continued."""
    estimates = [sum(validate(s, f"{source}:{s.line}").estimates().values()) for s in specs]
    return BatchFolder.open_or_create(out, specs, estimates, source)


def run_batch(folder: BatchFolder, cfg: BackendConfig,
              on_progress: Callable[[Progress], None] = lambda p: None) -> BatchFolder:
    """Run every job of `folder` that is not done; returns when all have ended (or re-raises
    KeyboardInterrupt after writing `batch.json`, the running jobs stopped at a checkpoint)."""
    todo = [j for j in folder.jobs if j["status"] != "done"]
    slots, threads = plan_slots(cfg.jobs)
    slots = max(1, min(slots, len(todo)))
    folder.write()
    if not todo:
        return folder
    backend = open_backend(cfg, slots, threads)
    try:
        _follow(folder, backend, todo, (slots, threads), on_progress)
    except BaseException:
        backend.close(cancel=True)
        folder.refresh()
        folder.write()
        raise
    backend.close()
    return folder


def _follow(folder: BatchFolder, backend: Backend, todo: list[dict], slots: tuple[int, int],
            on_progress: Callable[[Progress], None]) -> None:
    """Keep `slots` = (jobs, threads per job) jobs in the backend, never more, so an interrupted batch
    leaves none queued there."""
    (jobs, threads), waiting, futures = slots, list(todo), {}
    while waiting or futures:
        while waiting and len(futures) < jobs:
            job = waiting.pop(0)
            futures[backend.submit(Task(job["spec"], str(folder.run_dir(job)), threads))] = job
        finished, _ = wait(futures, timeout=POLL_S, return_when=FIRST_COMPLETED)
        for future in finished:
            futures.pop(future).update(_result(future))
        _refresh_unfinished(folder, list(futures.values()))
        folder.write()
        on_progress(Progress(len(folder.jobs), folder.counts(), eta_seconds(folder, jobs)))


def _result(future: Future) -> dict:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - the worker died more often than the backend retries
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def _refresh_unfinished(folder: BatchFolder, jobs: list[dict]) -> None:
    """Jobs still in the backend: their run folders tell whether they started and how far they are."""
    folder.refresh(jobs)
    for job in jobs:
        if job["status"] in ("failed", "interrupted"):
            job["status"] = "running"  # a worker died and the backend runs it again, or has yet to report
