"""`gen3d batch JOBS`: many jobs at once, on this machine or on a Ray cluster (docs/scale-out.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from tqdm import tqdm

from gen3d.batch.backends import BackendConfig, import_ray
from gen3d.batch.driver import Progress, open_batch, run_batch
from gen3d.batch.folder import BATCH_FILE, BatchFolder
from gen3d.batch.specs import Defaults, read_specs
from gen3d.bench.report import format_table
from gen3d.cli import app
from gen3d.config import SEED_RANGE
from gen3d.commands.jobs import EXIT_INTERRUPTED, HEADLINE_METRICS
from gen3d.commands.options import ConfigOpt, DryRunOpt, SetOpt, check_output_folder
from gen3d.errors import UserError
from gen3d.runs import runs_root


class BatchBar:
    """A bar over the batch's jobs on a terminal; elsewhere one line whenever a job ends."""

    def __init__(self, total: int):
        self.enabled = sys.stderr.isatty()
        self.bar = tqdm(total=total, desc="batch", file=sys.stderr, dynamic_ncols=True) if self.enabled else None
        self.last: dict | None = None

    def __call__(self, progress: Progress) -> None:
        counts = {k: progress.counts[k] for k in ("done", "failed", "running")}
        eta = "-" if progress.eta_s is None else f"{progress.eta_s:.0f}s"
        if self.bar is not None:
            self.bar.n = progress.finished
            self.bar.set_postfix({**counts, "eta": eta}, refresh=True)
        elif counts != self.last:
            print(f"batch: {progress.finished}/{progress.total} finished ({', '.join(f'{v} {k}' for k, v in counts.items())}),"
                  f" eta {eta}", file=sys.stderr, flush=True)
        self.last = counts

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summary_rows(folder: BatchFolder) -> list[dict]:
    rows = []
    for job in folder.jobs:
        shown = [f"{k}={job['metrics'][k]:.4g}" for k in HEADLINE_METRICS if isinstance(job["metrics"].get(k), (int, float))]
        rows.append({"job": job["id"], "status": job["status"], "seconds": round(job["seconds"], 1),
                     "metrics": " ".join(shown) or "-", "error": (job.get("error") or "-")[:60]})
    return rows


@app.command("batch")
def batch(
    jobs_file: Annotated[Path, typer.Argument(help="Job specs: YAML (jobs, sweep, defaults), JSONL, or a text file "
                                                   "of prompts (one text-to-3d job a line).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Batch folder (default: $GEN3D_RUNS/batch-<jobs file "
                                                                "name>); re-running continues it.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="local (a process pool) or ray.")] = "local",
    jobs: Annotated[int, typer.Option("--jobs", min=0, max=1024, help="Jobs at once (0: one per core); threads "
                                                                      "per job = cores / jobs.")] = 0,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster to join (default: start a "
                                                                              "local instance).")] = None,
    gpus: Annotated[float, typer.Option("--gpus-per-job", min=0.0, help="GPUs each Ray task reserves.")] = 0.0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seed: Annotated[int, typer.Option("--seed", min=SEED_RANGE[0], max=SEED_RANGE[1],
                                      help="Seed of jobs that name none.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the batch summary as JSON.")] = False,
    dry: DryRunOpt = False,
) -> None:
    """Run every job of JOBS, each in its own run folder under one batch folder with a batch.json.

    Every spec is checked before the first job starts. Re-running the command continues the batch:
    finished jobs are skipped, interrupted ones resume from their checkpoints. Exits 1 when a job
    failed, 130 when interrupted.
    """
    if backend not in ("local", "ray"):
        raise UserError(f"--backend must be local or ray, got '{backend}'")
    if backend == "ray":
        import_ray()  # without ray: the one-line install hint, before anything is read or written
    if out is not None:
        check_output_folder(out)
    defaults = Defaults(config=None if config is None else str(config), overrides=list(set_ or []), seed=seed)
    specs = read_specs(jobs_file, defaults)
    out = out if out is not None else runs_root() / f"batch-{jobs_file.stem}"
    if dry:
        for i, spec in enumerate(specs):
            typer.echo(json.dumps({"job": i, **spec.to_json()}))
        return
    cfg = BackendConfig(name=backend, jobs=jobs, ray_address=ray_address, gpus_per_job=gpus)
    folder = open_batch(specs, out, jobs_file)
    bar = BatchBar(len(folder.jobs))
    try:
        run_batch(folder, cfg, on_progress=bar)
    except KeyboardInterrupt:
        bar.close()
        typer.echo(f"interrupted; continue with the same command (batch folder {folder.path})", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    bar.close()
    rows = summary_rows(folder)
    typer.echo(json.dumps({"batch": str(folder.path), "counts": folder.counts(), "jobs": rows}) if as_json
               else format_table(rows) + f"\n{folder.path / BATCH_FILE}")
    counts = folder.counts()
    if counts["failed"] or counts["interrupted"]:  # a job's worker was stopped: the same command continues it
        raise typer.Exit(1 if counts["failed"] else EXIT_INTERRUPTED)
