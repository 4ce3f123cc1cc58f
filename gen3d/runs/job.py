"""The job runner every pipeline uses: ordered stages, estimates, run folder, interrupts, resume.

A pipeline only describes its stages; the runner owns the bookkeeping: it seeds every RNG per
stage, times stages against their estimates, keeps the manifest's status truthful whatever
happens (done, failed, interrupted), and on resume skips finished stages and restarts the
interrupted one from its checkpoint so the artifacts come out bit-identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from gen3d.config import to_dict
from gen3d.device import activate, peak_memory_mb, reset_peak_memory, resolve_settings
from gen3d.errors import UserError
from gen3d.models.prior import REAL_PRIORS
from gen3d.runs.checkpoint import (
    Checkpoint,
    capture_rng,
    check_checkpoints,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from gen3d.runs.folder import LOG, RunFolder, jsonable, new_manifest, new_run_dir, now_iso
from gen3d.runs.lock import run_lock
from gen3d.runs.validate import validate_job

Echo = Callable[[str], None]


class StopRequested(KeyboardInterrupt):
    """Raised at a step boundary after a stop request, once the checkpoint is written."""


@dataclass(frozen=True)
class Stage:
    """One step of a job. `run` does the work; `estimate_seconds` predicts it from the job alone
    (config and inputs; at most a scene's metadata, no image decoded) so estimates can be shown
    before anything starts."""

    name: str
    run: Callable[[StageContext], None]
    estimate_seconds: Callable[[Job], float]


@dataclass
class Job:
    """What to run: kind, resolved typed config, inputs (JSON-able), seed and the stages in order."""

    kind: str
    config: Any
    inputs: dict
    seed: int
    stages: list[Stage]
    slug: str = "run"  # the readable tail of the run folder name, e.g. the scene or prompt

    def estimates(self) -> dict[str, float]:
        return {stage.name: float(stage.estimate_seconds(self)) for stage in self.stages}


def derive_seed(seed: int, stage: str) -> int:
    """A stage's seed from (job seed, stage name): stages draw independent streams, and a stage's
    stream does not depend on which stages ran before it in this process."""
    digest = hashlib.sha256(f"{seed}:{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Interrupts:
    """SIGINT/SIGTERM handling while a job runs.

    Inside a checkpointed step loop the first signal only requests a stop, so the loop can save a
    consistent checkpoint at the next step boundary; anywhere else (or on a second signal) it
    raises KeyboardInterrupt at once. Handlers are installed only on the main thread; other
    threads (the viewer's worker) stop a job through the `stop` event instead.
    """

    def __init__(self, stop: threading.Event, echo: Echo):
        self.stop = stop
        self.echo = echo
        self.graceful = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.graceful and not self.stop.is_set():
            self.stop.set()
            with contextlib.suppress(OSError):  # e.g. the terminal's pipe is already gone
                self.echo("stopping after this step (signal again to stop now)")
            return
        raise KeyboardInterrupt

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class StageContext:
    """Everything a stage may touch: the run folder, its seeded generators, the config and inputs,
    and `shared`, a dict for passing in-memory results to later stages (a resumed run starts with
    it empty, so stages re-load earlier outputs from the run folder when a key is missing)."""

    run: RunFolder
    job: Job
    stage: str
    stage_seed: int  # derived from (seed, stage); seeds `generator`, `np_rng` and the global RNGs
    generator: torch.Generator
    np_rng: np.random.Generator
    shared: dict
    interrupts: _Interrupts
    _loop_clock: tuple[float, int] | None = field(default=None, repr=False)  # (start time, start step)

    @property
    def config(self) -> Any:
        return self.job.config

    @property
    def inputs(self) -> dict:
        return self.job.inputs

    @property
    def seed(self) -> int:
        return self.job.seed

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def stop_requested(self) -> bool:
        return self.interrupts.stop.is_set()

    def event(self, step: int | None = None, total: int | None = None, **fields: Any) -> dict:
        """Log progress; `step` counts completed steps. Inside `steps()` an ETA is added."""
        if self._loop_clock is not None and step is not None and total and "eta_s" not in fields:
            started, first = self._loop_clock
            done = step - first
            if done > 0:
                fields["eta_s"] = round((time.perf_counter() - started) / done * (total - step), 1)
        return self.run.event(self.stage, step, total, **fields)

    def log(self, message: str) -> None:
        self.run.log(f"[{self.stage}] {message}")

    def add_artifact(self, path: Path, role: str, **meta: Any) -> dict:
        return self.run.add_artifact(path, role, self.stage, **meta)

    def set_metrics(self, **metrics: Any) -> None:
        self.run.set_metrics(**metrics)

    def save_checkpoint(self, state: dict, step: int) -> Path:
        """Write `ckpt/<stage>.pt` with `state`, `step` and all RNG states (replacing the last one)."""
        path = self.run.checkpoint_path(self.stage)
        save_checkpoint(path, step, state, capture_rng(self.generator, self.np_rng))
        return path

    def load_checkpoint(self) -> Checkpoint | None:
        """This stage's last checkpoint with its RNG states restored, or None on a fresh start."""
        ckpt = load_checkpoint(self.run.checkpoint_path(self.stage))
        if ckpt is not None:
            restore_rng(ckpt.rng, self.generator, self.np_rng)
        return ckpt

    def read_checkpoint(self, stage: str) -> Checkpoint:
        """An earlier stage's final checkpoint (its RNG states are left alone)."""
        ckpt = load_checkpoint(self.run.checkpoint_path(stage))
        if ckpt is None:
            raise UserError(f"{self.run.checkpoint_path(stage)}: missing; stage '{stage}' has not checkpointed")
        return ckpt

    def steps(self, total: int, *, every: int, state: Callable[[], dict],
              restore: Callable[[dict], None]) -> Iterator[int]:
        """Yield step indices `start..total-1`, resuming from this stage's checkpoint when there is one.

        Checkpoints every `every` steps and after the last step; a stop request (signal or the
        `stop` event) checkpoints at the next step boundary and raises StopRequested. Do all
        random draws inside the loop through `generator`/`np_rng` (or the global RNGs): their
        states are saved with `state()` so the continued run draws the same numbers.
        """
        start = 0
        ckpt = self.load_checkpoint()
        if ckpt is not None:
            restore(ckpt.state)
            start = ckpt.step
            self.log(f"resumed from checkpoint at step {start}/{total}")
        saved = start
        self._loop_clock = (time.perf_counter(), start)
        self.interrupts.graceful = True
        try:
            for step in range(start, total):
                if self.stop_requested:
                    if step != saved:
                        self.save_checkpoint(state(), step)
                    self.log(f"stopped at step {step}/{total}; checkpoint saved")
                    raise StopRequested
                yield step
                if (step + 1) % every == 0 or step + 1 == total:
                    self.save_checkpoint(state(), step + 1)
                    saved = step + 1
        finally:
            self.interrupts.graceful = False
            self._loop_clock = None


def resolve_device(job: Job) -> tuple[str, str]:
    """Check and resolve the job's `device` and `precision` (fp16 by default only for a real prior on
    CUDA) before anything is written."""
    prior = getattr(job.config, "prior", None)
    return resolve_settings(job.config, getattr(prior, "name", prior) in REAL_PRIORS)


def format_plan(job: Job, estimates: dict[str, float]) -> str:
    width = max(len("total"), *(len(name) for name in estimates))
    lines = [f"plan: {job.kind}, seed {job.seed}, {torch.get_num_threads()} threads"]
    lines += [f"  {name.ljust(width)}  ~{seconds:.1f} s" for name, seconds in estimates.items()]
    lines.append(f"  {'total'.ljust(width)}  ~{sum(estimates.values()):.1f} s")
    return "\n".join(lines)


def warn(warnings: list[str]) -> None:
    for line in warnings:
        print(line, file=sys.stderr)


def dry_run(job: Job, echo: Echo = print) -> None:
    """Print the resolved config as YAML and every stage's estimate; writes nothing."""
    resolve_device(job)
    warn(validate_job(job, new_run=False))
    echo(yaml.safe_dump(jsonable(to_dict(job.config)), sort_keys=False).rstrip())
    echo(format_plan(job, job.estimates()))


def run_job(job: Job, out: Path | None = None, *, root: Path | None = None, echo: Echo = print,
            stop: threading.Event | None = None, on_event: Callable[[dict], None] | None = None) -> RunFolder:
    """Start a new run of `job` in `out` (or a fresh folder under `root`) and run every stage.

    Returns the run folder with status `done` or `interrupted`; re-raises failures after marking
    the run `failed`. A run that fails on bad input before any stage finished leaves no folder.
    """
    device, precision = resolve_device(job)
    warnings = validate_job(job, out, root)
    warn(warnings)
    estimates = job.estimates()
    echo(format_plan(job, estimates))
    created = out is None or not Path(out).exists()
    path = new_run_dir(job.kind, job.slug, root) if out is None else Path(out)
    try:
        manifest = new_manifest(path.name, job.kind, job.inputs, job.seed, to_dict(job.config), estimates,
                                device, precision)
        manifest["warnings"] = warnings
        run = RunFolder.create(path, manifest)
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    echo(f"run folder: {run.path}")
    with run_lock(run.path):
        return _execute(job, run, created=created, echo=echo, stop=stop, on_event=on_event)


def resume_job(run: RunFolder, job: Job, *, echo: Echo = print, stop: threading.Event | None = None,
               on_event: Callable[[dict], None] | None = None) -> RunFolder:
    """Continue `run` (rebuilt as `job` from its manifest): finished stages are skipped, the
    interrupted one continues from its checkpoint, with the thread count the run started with.
    Holds the run's lock: a second process resuming the same run is refused."""
    with run_lock(run.path):
        if run.status == "done":
            raise UserError(f"{run.path}: run is already done; nothing to resume")
        names = [record["name"] for record in run.manifest["stages"]]
        if names != [stage.name for stage in job.stages]:
            raise UserError(f"{run.path / 'manifest.json'}: stages {names} do not match the '{job.kind}' pipeline")
        resolve_device(job)  # the device it started on must still be here
        validate_job(job, new_run=False)
        check_checkpoints(run.path)
        torch.set_num_threads(int(run.manifest["num_threads"]))
        pending = {r["name"]: r["estimated_seconds"] for r in run.manifest["stages"] if r["status"] != "done"}
        echo(format_plan(job, pending))
        run.log(f"resuming ({run.status})")
        return _execute(job, run, created=False, echo=echo, stop=stop, on_event=on_event)


def _execute(job: Job, run: RunFolder, *, created: bool, echo: Echo, stop: threading.Event | None,
             on_event: Callable[[dict], None] | None) -> RunFolder:
    if on_event is not None:
        run.listeners.append(on_event)
    interrupts = _Interrupts(stop or threading.Event(), echo)
    shared: dict = {}
    current: dict | None = None
    run.set_status("running")
    try:
        with interrupts:
            for stage in job.stages:
                record = run.stage_record(stage.name)
                if record["status"] == "done":
                    echo(f"{stage.name}: already done")
                    continue
                if interrupts.stop.is_set():
                    raise StopRequested
                current = record
                _run_stage(job, stage, run, record, shared, interrupts, echo)
                current = None
    except KeyboardInterrupt:
        if current is not None:
            current["status"] = "interrupted"
        run.log("interrupted")
        run.event(current["name"] if current else None, message="interrupted")
        run.set_status("interrupted")
        echo(f"interrupted; continue with: gen3d resume {run.path}")
        return run
    except UserError as exc:
        if current is not None:
            current["status"] = "failed"
        run.log(f"failed: {exc}")
        run.set_status("failed", str(exc))
        if created and not any(r["status"] == "done" for r in run.manifest["stages"]):
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    except Exception as exc:
        if current is not None:
            current["status"] = "failed"
        run.log("failed with an internal error:\n" + traceback.format_exc())
        run.set_status("failed", f"{type(exc).__name__}: {exc}")
        echo(f"run failed; traceback in {run.path / LOG}")
        raise
    finally:
        if on_event is not None:
            run.listeners.remove(on_event)
    run.set_status("done")
    echo(f"done: {run.path}")
    return run


def _run_stage(job: Job, stage: Stage, run: RunFolder, record: dict, shared: dict,
               interrupts: _Interrupts, echo: Echo) -> None:
    record.update(status="running", started=now_iso())
    run.write_manifest()
    run.log(f"[{stage.name}] started (estimated {record['estimated_seconds']:.1f} s)")
    run.event(stage.name, message="started")
    stage_seed = derive_seed(job.seed, stage.name)
    seed_everything(stage_seed)
    ctx = StageContext(run=run, job=job, stage=stage.name, stage_seed=stage_seed,
                       generator=torch.Generator().manual_seed(stage_seed),
                       np_rng=np.random.default_rng(stage_seed), shared=shared, interrupts=interrupts)
    device = resolve_device(job)[0]
    activate(device)
    reset_peak_memory(device)
    started = time.perf_counter()
    try:
        stage.run(ctx)
    finally:
        record["seconds"] = round(record["seconds"] + time.perf_counter() - started, 3)
        activate("cpu")
    record["status"] = "done"
    peak = peak_memory_mb(device)
    if peak is not None:
        record["peak_memory_mb"] = peak
        run.manifest["peak_memory_mb"] = max(peak, run.manifest.get("peak_memory_mb", 0.0))
    run.manifest["num_threads"] = torch.get_num_threads()  # stages may set their own (e.g. the trainer)
    run.write_manifest()
    run.log(f"[{stage.name}] done in {record['seconds']:.1f} s")
    run.event(stage.name, message="done")
    echo(f"{stage.name}: {record['seconds']:.1f} s (estimated {record['estimated_seconds']:.1f} s)")

