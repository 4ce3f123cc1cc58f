"""`gen3d resume`, `gen3d runs`, `gen3d export`, and `launch_pipeline`, the one way every job
command (text-to-3d, image-to-3d, ...) starts a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gen3d.bench.report import format_table
from gen3d.cli import app
from gen3d.config import load_config
from gen3d.errors import UserError
from gen3d.io import printable
from gen3d.pipelines import job_from_manifest
from gen3d.pipelines.kinds import job_overrides, pipeline_module
from gen3d.runs import (
    Job,
    RunFolder,
    dry_run,
    read_manifest,
    resume_job,
    run_job,
    runs_root,
)
from gen3d.runs.checkpoint import check_checkpoints
from gen3d.runs.folder import MANIFEST
from gen3d.runs.lock import run_lock
from gen3d.runs.progress import ProgressBar
from gen3d.runs.validate import check_grid_memory

EXIT_INTERRUPTED = 130  # the shell's convention for a run stopped by Ctrl-C / SIGTERM
HEADLINE_METRICS = ("psnr", "ssim", "chamfer", "clip_score")


def finish(run: RunFolder) -> None:
    """Exit 130 when the run was interrupted (continue it with `gen3d resume`)."""
    if run.status == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)


def launch_job(job: Job, *, out: Path | None, dry: bool) -> None:
    """Dry-run `job` (print config and estimates, write nothing) or run it with a progress bar.

    Exits 130 when the run was interrupted (continue it with `gen3d resume`).
    """
    if dry:
        dry_run(job)
        return
    bar = ProgressBar()
    try:
        finish(run_job(job, out, on_event=bar))
    finally:
        bar.close()


def launch_pipeline(kind: str, inputs: dict, *, config: Path | None, overrides: list[str] | None, flags: dict,
                    seed: int, out: Path | None, dry: bool) -> None:
    """What every job command does with its options: the pipeline's config from the file, the `--set`
    items and its dedicated flags, then its job built from `inputs` and launched (or dry-run)."""
    module = pipeline_module(kind)
    cfg = load_config(module.Config, config, job_overrides(overrides, **flags))
    launch_job(module.build_job(cfg, inputs, seed), out=out, dry=dry)


def manifest_job(run: RunFolder):
    """The job a run was started with, or a one-line error naming its manifest when it cannot be rebuilt."""
    try:
        return job_from_manifest(run.manifest)
    except UserError as exc:
        raise UserError(f"{run.path / MANIFEST}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{run.path / MANIFEST}: inputs or config do not fit a '{run.manifest['kind']}' run "
                        f"({type(exc).__name__}: {exc})") from None


@app.command("resume")
def resume(run_dir: Annotated[Path, typer.Argument(help="A run folder whose run was interrupted or failed.")]) -> None:
    """Continue an interrupted or failed run where it stopped.

    Config, inputs and seed come from the manifest; finished stages are skipped and the stopped one
    continues from its last checkpoint, so the result equals an uninterrupted run's.
    """
    run = RunFolder.open(run_dir)
    job = manifest_job(run)
    bar = ProgressBar()
    try:
        finish(resume_job(run, job, on_event=bar))
    finally:
        bar.close()


def _summary(run_dir: Path, manifest: dict) -> dict:
    inputs = ", ".join(str(v) for v in manifest.get("inputs", {}).values() if v not in (None, ""))
    metrics = manifest.get("metrics", {})
    shown = [f"{k}={metrics[k]:.4g}" for k in HEADLINE_METRICS if isinstance(metrics.get(k), (int, float))]
    return {
        "id": printable(run_dir.name),
        "kind": printable(manifest["kind"]),
        "status": manifest["status"],
        "inputs": printable(inputs if len(inputs) <= 48 else "..." + inputs[-45:]),
        "seconds": round(sum(s["seconds"] for s in manifest["stages"]), 1),
        "metrics": " ".join(shown) or "-",
    }


@app.command("runs")
def runs(root: Annotated[Path | None, typer.Option("--root", help="Runs folder (default: $GEN3D_RUNS or ./runs).")] = None) -> None:
    """List runs with their kind, status, inputs, duration and headline metrics."""
    root = runs_root() if root is None else root
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: not a runs folder (it is a file)")
    rows = []
    for run_dir in sorted(p for p in root.glob("*") if (p / "manifest.json").is_file()):
        try:
            rows.append(_summary(run_dir, read_manifest(run_dir)))
        except UserError as exc:
            rows.append({"id": printable(run_dir.name), "status": printable(f"unreadable ({exc})")})
    typer.echo(format_table(rows) if rows else f"no runs in {root}")


@app.command("export")
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder with a trained checkpoint.")],
    fmt: Annotated[str, typer.Option("--format", help="glb, ply or obj.")] = "glb",
    resolution: Annotated[int | None, typer.Option("--resolution", help="Marching-cubes grid size (default: the run's).")] = None,
) -> None:
    """Re-export a run's mesh from its checkpoint, e.g. at a finer resolution or another format
    (reconstruct, text-to-3d, image-to-3d; 4D runs: one mesh per frame)."""
    if fmt not in ("glb", "ply", "obj"):
        raise UserError(f"--format must be glb, ply or obj, got '{fmt}'")
    if resolution is not None:
        check_grid_memory(resolution, "--resolution")
    run = RunFolder.open(run_dir)
    try:
        module = pipeline_module(run.manifest["kind"])
    except UserError as exc:
        raise UserError(f"{run.path / MANIFEST}: {exc}") from None
    if not hasattr(module, "export_mesh"):
        raise UserError(f"{run_dir}: '{run.manifest['kind']}' runs have no mesh to export")
    with run_lock(run.path):
        check_checkpoints(run.path)
        path = module.export_mesh(run, fmt, resolution)
        run.write_manifest()
    typer.echo(f"wrote {path}")
