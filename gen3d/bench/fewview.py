"""Few-view reconstruction with and without the prior (`gen3d bench fewview`).

(a) ShapeWorld held-out objects seen by 1, 3 and 6 of 6 random training cameras, scored at the 8
evaluation-orbit cameras; (b) the lego subset with 3, 6 and 9 views at 100x100, scored on its test
split. Each with the prior off (the same pipeline, engine and config with `prior.name: null`) and
in both of its modes: cat3d (generated views at new cameras) and reconfusion (an SDS regulariser
at random new cameras). The prior never saw anything like lego and frames objects differently, so
(b) reports honestly whether it helps.
Rows: dataset, views, prior (off, cat3d or reconfusion), psnr, ssim, mask_iou, seconds (whole run,
prior already loaded).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from gen3d.config import load_config
from gen3d.data import Scene, Split
from gen3d.data.writer import write_nerfstudio
from gen3d.pipelines import fewview
from gen3d.pipelines.stages.resources import cached_prior
from gen3d.runs import run_job
from gen3d.settings import data_dir
from gen3d.shapeworld.dataset import render_spec
from gen3d.shapeworld.scenes import eval_cameras, sample_scene

PRIOR = "shapeworld-mv"
PRIOR_MODES = ("off",) + fewview.MODES
SCENE_SEED = 7  # the held-out objects benchmarked (any fixed seed; never the prior's training draws)
TRAIN_CAMERAS = 6

# The engine for object-centric scenes with alpha: view-independent colour, mask loss, random
# backgrounds; one thread, as two crawl when anything else shares the 2-core machine.
ENGINE = [
    "recon.threads=1",
    "recon.mask_loss_weight=1.0", "recon.field.view_dependent=false", "recon.field.encoding.kind=hash",
    "recon.field.encoding.hash.levels=8", "recon.field.encoding.hash.log2_table=14",
    "recon.field.encoding.hash.max_resolution=128", "recon.render.background=random",
    "recon.render.step_size=0.03", "recon.render.occupancy.resolution=32", "recon.optim.lr=0.02", "recon.batch_rays=1024",
    "train.checkpoint_every=100000", "train.eval_every=100000", "evaluate.max_views=null",
    "export.resolution=32", "export.turntable_frames=2", "export.turntable_size=32", "export.video=false",
    "export.gif=false", "export.pointcloud_points=200",
]


def shapeworld_scene(index: int, size: int, out_dir: Path, seed: int = SCENE_SEED) -> Path:
    """Held-out ShapeWorld object `index` as a nerfstudio folder: 6 random training cameras, the 8
    evaluation-orbit cameras as its test split, RGBA images."""
    sw = sample_scene(seed, index, TRAIN_CAMERAS, size, split="heldout")

    def split(cams, prefix: str) -> Split:
        rgba = render_spec(sw.spec, cams).rgba
        alpha = rgba[..., 3:]
        return Split(rgba[..., :3] * alpha + (1 - alpha), cams, [f"{prefix}_{i:02d}.png" for i in range(len(cams))], alpha)

    scene = Scene(split(sw.cameras, "train"), split(eval_cameras(size), "eval"), near=1.0, far=4.0,
                  aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]), scene_type="bounded", background=(1.0, 1.0, 1.0),
                  source=out_dir, format="nerfstudio")
    return write_nerfstudio(scene, out_dir)


def prior_overrides(mode: str) -> list[str]:
    """The config keys of one of PRIOR_MODES."""
    return ["prior.name=null"] if mode == "off" else [f"prior.name={PRIOR}", f"prior.mode={mode}"]


def run_one(scene: Path, views: int, prior: str, overrides: list[str], out: Path) -> dict:
    """One pipeline run with the prior off or in one of its modes; its held-out scores and wall-clock seconds."""
    cfg = load_config(fewview.Config, None, ENGINE + overrides + [f"data.views={views}"] + prior_overrides(prior))
    start = time.perf_counter()
    run = run_job(fewview.build_job(cfg, {"scene": str(scene)}, seed=0), out, echo=lambda *_: None)
    metrics = run.manifest["metrics"]
    return {"views": views, "prior": prior, "psnr": round(metrics["psnr"], 2), "ssim": round(metrics["ssim"], 3),
            "mask_iou": metrics.get("mask_iou"), "seconds": round(time.perf_counter() - start, 1)}


def _mean_rows(rows: list[dict], dataset: str) -> list[dict]:
    out = []
    for views in sorted({r["views"] for r in rows}):
        for prior in PRIOR_MODES:
            group = [r for r in rows if r["views"] == views and r["prior"] == prior]
            out.append({"dataset": dataset, "views": views, "prior": prior, "caption": "mean",
                        **{k: round(sum(r[k] for r in group) / len(group), 3) for k in ("psnr", "ssim", "mask_iou", "seconds")}})
    return out


def run(quick: bool, out_dir: Path) -> list[dict]:
    cached_prior(PRIOR, None)  # loaded once, outside every timed run
    objects = 1 if quick else 3
    steps = 150 if quick else 400
    common = [f"recon.steps={steps}"]  # the prior samples with the pipeline's steps: 10 give blobs at 1 view
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sw_rows = []
        for index in range(objects):
            scene = shapeworld_scene(index, 64, tmp / f"sw{index}")
            for views in (1, 3, 6):
                for prior in PRIOR_MODES:
                    row = run_one(scene, views, prior, common, tmp / f"run-sw{index}-{views}-{prior}")
                    sw_rows.append({"dataset": f"shapeworld-heldout-{index}", **row})
        rows += sw_rows + _mean_rows(sw_rows, "shapeworld-heldout")
        lego = data_dir(required=False) / "nerf_synthetic_lego_subset"
        if lego.is_dir():
            for views in ((3,) if quick else (3, 6, 9)):
                for prior in PRIOR_MODES:
                    row = run_one(lego, views, prior, common + ["data.size=[100,100]"], tmp / f"run-lego-{views}-{prior}")
                    rows.append({"dataset": "lego", **row})
    return rows
