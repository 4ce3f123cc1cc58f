"""`gen3d bench text-to-3d`: each method on held-out ShapeWorld captions, scored against ground truth.

For every (method, caption) a full text-to-3d job runs with the bundled prior (already loaded: its
load time is its own row). Rows: seconds per stage and end to end, the ratio of the job's estimate
to its actual time, mask IoU and colour of the 8 renders at the evaluation orbit against the
ground-truth mesh rendered by the project's mesh renderer at the same cameras, and the Chamfer
distance, normal error, F-score at 2% and topology of the exported mesh against the ground-truth
mesh (distances in units of its bounding-sphere radius), and the run's mesh_psnr.
Captions carry a size word, which fixes the ground-truth geometry. `--quick` runs fewer captions
and shorter distillations (the mv-recon job is the same).

`TRUTH_VIEWS` rows are the reconstruction's ceiling: the mv-recon job with its views stage replaced
by ground-truth renders at the same cameras, so what remains is the fit's and the export's error
(8 views from the prior's elevations never see an object's underside), not the prior's.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

from gen3d.bench.report import progress
from gen3d.export.metrics import mask_iou, surface_metrics
from gen3d.pipelines import text_to_3d
from gen3d.pipelines.stages.resources import cached_prior, job_prior
from gen3d.pipelines.stages.views import save_views, view_cameras
from gen3d.render.mesh import render_mesh
from gen3d.runs import Job, Stage, StageContext, read_manifest, run_job
from gen3d.shapeworld import HELD_OUT
from gen3d.shapeworld.captions import parse_caption
from gen3d.shapeworld.dataset import SHADING, render_spec
from gen3d.shapeworld.scenes import FOV_Y_DEG, eval_cameras
from gen3d.shapeworld.shapes import build_mesh
from gen3d.shapeworld.spec import nearest_colour

SEED = 0
QUICK_DISTILL_STEPS = 300
SURFACE_KEYS = ("chamfer", "normal_error_deg", "fscore", "euler_ok")
TRUTH_VIEWS = "mv-recon-truth"  # mv-recon on ground-truth renders: the reconstruction's ceiling


def captions(quick: bool) -> list[str]:
    """Held-out (shape, colour) pairs as captions, sizes alternating large / small."""
    pairs = sorted(HELD_OUT)[:2] if quick else sorted(HELD_OUT)
    return [f"a {('large', 'small')[i % 2]} {colour} {shape}" for i, (shape, colour) in enumerate(pairs)]


def _renders(run_dir: Path) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(Image.open(run_dir / "renders" / f"{i:03d}.png")))
                        for i in range(8)]).float() / 255


def score(run_dir: Path, caption: str) -> dict:
    """mask_iou and color_ok of the evaluation-orbit renders, the surface metrics of the exported
    mesh (Chamfer, normal error, F-score at 2%, topology) against the caption's ground truth, and
    the run's mesh_psnr when it has one."""
    spec = parse_caption(caption)
    truth_mesh = build_mesh(spec)
    renders = _renders(run_dir)
    truth = render_mesh(truth_mesh, eval_cameras(renders.shape[1]), shading=SHADING).rgba
    foreground = renders[..., 3] > 0.5
    colour = renders[..., :3][foreground].mean(0).numpy() if foreground.any() else np.ones(3)
    mesh_path = run_dir / "mesh.ply"
    surface = (surface_metrics(trimesh.load(mesh_path, force="mesh"), truth_mesh) if mesh_path.is_file()
               else dict.fromkeys(SURFACE_KEYS, float("nan")))
    metrics = read_manifest(run_dir)["metrics"]
    return {"mask_iou": mask_iou(renders[..., 3], truth[..., 3]),
            "color_ok": bool(foreground.any()) and nearest_colour(colour)[0] == spec.colour,
            **{k: surface[k] for k in SURFACE_KEYS},
            "mesh_psnr": metrics.get("mesh_psnr", float("nan"))}


def _row(method: str, caption: str, run_dir: Path, seconds: float) -> dict:
    manifest = read_manifest(run_dir)
    stages = {f"{s['name']}_s": s["seconds"] for s in manifest["stages"]}
    estimate = sum(s["estimated_seconds"] for s in manifest["stages"])
    return {"method": method, "caption": caption, "seconds": seconds, **stages, **score(run_dir, caption),
            "time_estimate_ratio": estimate / seconds}


def _mean_row(method: str, rows: list[dict]) -> dict:
    keys = ("seconds", "mask_iou", "color_ok", *SURFACE_KEYS, "mesh_psnr", "time_estimate_ratio")
    def mean(values: list[float]) -> float:  # NaN-free mean; NaN where no row has the value (sds: no mesh_psnr)
        finite = [v for v in values if np.isfinite(v)]
        return float(np.mean(finite)) if finite else float("nan")

    return {"method": method, "caption": "mean", **{k: mean([float(r[k]) for r in rows]) for k in keys}}


def method_config(method: str, distill_steps: int | None) -> text_to_3d.Config:
    """The job's default config for `method` (TRUTH_VIEWS: mv-recon's); `distill_steps` shortens
    score distillation."""
    cfg = text_to_3d.Config(method="mv-recon" if method == TRUTH_VIEWS else method)
    cfg.recon.threads = 0  # keep the process's thread count (OMP_NUM_THREADS), recorded in the report's env
    if distill_steps is not None:
        cfg.distill.steps = distill_steps
        cfg.distill.coarse_steps = distill_steps // 5
    return cfg


def truth_views(ctx: StageContext) -> None:
    """A views stage that saves the caption's ground-truth renders at the job's view cameras."""
    cams = view_cameras(ctx.config.views, job_prior(ctx.config).output_size)
    save_views(ctx, render_spec(parse_caption(ctx.inputs["prompt"]), cams).rgba.permute(0, 3, 1, 2).float(),
               cams, FOV_Y_DEG)


def method_job(method: str, cfg: text_to_3d.Config, caption: str) -> Job:
    """The text-to-3d job of `method`; TRUTH_VIEWS swaps its views stage for `truth_views`."""
    job = text_to_3d.build_job(cfg, {"prompt": caption}, SEED)
    if method == TRUTH_VIEWS:
        job.stages = [Stage(s.name, truth_views, s.estimate_seconds) if s.name == "views" else s for s in job.stages]
    return job


def run_methods(plan: dict[str, list[str]], distill_steps: int | None) -> list[dict]:
    """A text-to-3d job per (method, caption) of `plan`, scored; per-caption rows, then a mean row
    per method. `distill_steps` (None: the job's default) shortens sds and vsd."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for method, method_captions in plan.items():
            cfg = method_config(method, distill_steps)
            method_rows = []
            for i, caption in enumerate(method_captions):
                run_dir = Path(tmp) / f"{method}-{i}"
                began = time.perf_counter()
                run_job(method_job(method, cfg, caption), run_dir, echo=lambda _: None)
                method_rows.append(_row(method, caption, run_dir, time.perf_counter() - began))
                progress(f"{method} {i + 1}/{len(method_captions)}: {caption}")
            rows += method_rows + [_mean_row(method, method_rows)]
    return rows


def run(quick: bool, out_dir: Path) -> list[dict]:
    start = time.perf_counter()
    cached_prior("shapeworld-mv", None)
    rows: list[dict] = [{"method": "load", "caption": "-", "seconds": time.perf_counter() - start}]
    plan = {method: captions(quick) for method in (*text_to_3d.METHODS, TRUTH_VIEWS)}
    return rows + run_methods(plan, QUICK_DISTILL_STEPS if quick else None)
