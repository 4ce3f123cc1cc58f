"""`gen3d export RUN_DIR`: a finished run's mesh made again from its checkpoint, e.g. at a finer
grid or in another format, for every kind that exports meshes (objects, 4D clips, scenes).

The model comes back through the same reload path a resumed export stage uses
(`gen3d.pipelines.stages.reload`), so a re-export sees exactly the field the run exported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from gen3d.errors import UserError
from gen3d.export import write_mesh
from gen3d.pipelines.stages.asset import MeshAsset
from gen3d.pipelines.stages.distill import DISTILL_METHODS, Distiller
from gen3d.pipelines.stages.export import ExportConfig, field_asset, generated_images
from gen3d.pipelines.stages.fit import TrainerFactory
from gen3d.pipelines.stages.reload import stage_model
from gen3d.runs import RunFolder, StageContext


def write_export(run: RunFolder, asset: MeshAsset, fmt: str, path: Path, **meta) -> Path:
    """Write the asset as `fmt` (the GLB textured and +y up, PLY/OBJ z up) and record it (stage export)."""
    path = write_mesh(asset.primary if fmt == "glb" else asset.colored, path)
    run.add_artifact(path, "mesh", "export", format=fmt, up="y" if fmt == "glb" else "z", **meta)
    return path


def reload_context(run: RunFolder) -> StageContext:
    """A stage context over a finished run, to re-load its model outside the runner."""
    from gen3d.pipelines import job_from_manifest

    try:
        job = job_from_manifest(run.manifest)
    except UserError as exc:
        raise UserError(f"{run.path / 'manifest.json'}: {exc}") from None
    return StageContext(run=run, job=job, stage="export", stage_seed=0, generator=torch.Generator().manual_seed(0),
                        np_rng=np.random.default_rng(0), shared={}, interrupts=None)


def run_export_config(run: RunFolder, cfg: ExportConfig) -> ExportConfig:
    """The run's export settings at the density level its export chose (no level search: a
    re-export has no scoring views to search with)."""
    level = run.manifest["metrics"].get("mesh_threshold")
    threshold = float(level) if isinstance(level, (int, float)) and level > 0 else cfg.threshold
    return dataclasses.replace(cfg, threshold=threshold, auto_threshold=False)


def export_object_mesh(run: RunFolder, make_trainer: TrainerFactory, fmt: str, resolution: int | None) -> Path:
    """A single-object run's (text-to-3d, image-to-3d) mesh from its fit or distill checkpoint."""
    ctx = reload_context(run)
    field, _ = stage_model(ctx, make_trainer)
    cfg = run_export_config(run, ctx.config.export)
    resolution = resolution or cfg.resolution
    images = None if ctx.config.method in DISTILL_METHODS else generated_images(run.path)
    asset = field_asset(field, cfg, resolution, texture=cfg.texture and fmt == "glb", images=images)
    return write_export(run, asset, fmt, run.path / "export" / f"mesh-{resolution}.{fmt}", resolution=resolution)


def export_clip_meshes(run: RunFolder, make_trainer: TrainerFactory, distiller_cls: type[Distiller],
                       times: list[float], fmt: str, resolution: int | None) -> Path:
    """A 4D run's meshes, one per clip time, into `export/frames-<resolution>-<fmt>/`; frames
    without a surface are skipped as in the run's own export, but at least one must mesh."""
    ctx = reload_context(run)
    field, _ = stage_model(ctx, make_trainer, distiller_cls)
    cfg = ctx.config.export
    resolution = resolution or cfg.resolution
    folder = run.path / "export" / f"frames-{resolution}-{fmt}"
    written = 0
    for k, t in enumerate(times):
        try:
            asset = field_asset(field.at_time(t), cfg, resolution, texture=cfg.texture and fmt == "glb")
        except UserError:  # an empty frame, as in the export stage
            continue
        write_export(run, asset, fmt, folder / f"{k:03d}.{fmt}", resolution=resolution, frame=k, time=round(t, 6))
        written += 1
    if not written:
        raise UserError(f"{run.path}: no frame of the clip has a surface at export.threshold={cfg.threshold}")
    return folder
