"""One batch job in a worker process (a local pool process or a Ray worker): start the run, or
continue it from its run folder, and report how it ended.

The worker keeps nothing but the process-wide caches (`cached_prior`), so a job that a killed worker
left half-done is finished by whichever worker runs it next, from its checkpoints.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from gen3d.batch.folder import run_state
from gen3d.batch.specs import build_job, spec_from_json
from gen3d.errors import UserError
from gen3d.pipelines import job_from_manifest
from gen3d.runs import RunFolder, resume_job, run_job
from gen3d.runs.folder import MANIFEST


@dataclass(frozen=True)
class Task:
    """What a worker needs: the job's spec (as JSON), its run folder and its thread count."""

    spec: dict
    run_dir: str
    threads: int


def _quiet(message: str) -> None:
    """Workers print nothing: log.txt and events.jsonl say everything, the driver shows progress."""


def start_or_continue(task: Task) -> None:
    """Run the job in its folder: skip it when done, resume it when a run was cut short, else start it."""
    run_dir = Path(task.run_dir)
    if (run_dir / MANIFEST).is_file():
        run = RunFolder.open(run_dir)
        if run.status != "done":
            resume_job(run, job_from_manifest(run.manifest), echo=_quiet)
        return
    shutil.rmtree(run_dir, ignore_errors=True)  # killed before its manifest existed: nothing to keep
    torch.set_num_threads(task.threads)
    run_job(build_job(spec_from_json(task.spec)), run_dir, echo=_quiet)


def run_task(task: Task) -> dict:
    """The job's final state as `batch.json` records it; failures are a status, never an exception,
    so one bad job does not stop the batch (its traceback is in its log.txt)."""
    error = None
    try:
        start_or_continue(task)
    except UserError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded as the job's failure
        error = f"{type(exc).__name__}: {exc}"
    state = run_state(Path(task.run_dir))
    if error is not None:
        state.update(status="failed", error=state.get("error") or error)
    return state
