"""`gen3d bench priors`: the bundled shapeworld-mv prior on held-out (shape, colour) captions.

Each caption's samples are scored against ground-truth renders at the same cameras: mask IoU;
shape identity (the shape whose ground-truth mask best matches the sample is the captioned
one); colour (per caption part, the palette colour nearest to the sample's pixels where the
ground truth shows that part); view consistency (a field fitted to all but one generated view,
view-dependent colour off, scored by PSNR on the held-out view, beside the same on
ground-truth renders as the ceiling), on every caption; and seconds per set at 20 DPM-Solver++
steps. A shuffled-caption row (each set generated from another caption, scored against the
original) shows what ignoring the text would score.

The geometric section (rows with a `method`) runs whole text-to-3d jobs on the same captions (mv-recon
on all, sds and vsd on the first GEOMETRY_DISTILL_CAPTIONS) and scores the exported mesh against
ShapeWorld's exact mesh: Chamfer, normal error, F-score at 2% and topology (Euler characteristic
of the solid), what a user's asset looks like, which mask IoU does not see. Beside mv-recon, the
same job on ground-truth renders (`mv-recon-truth`) is the reconstruction's ceiling: the part of
the error the prior's views do not cause.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from gen3d.bench.report import progress
from gen3d.bench.text_to_3d import QUICK_DISTILL_STEPS, TRUTH_VIEWS, run_methods
from gen3d.cameras import Cameras
from gen3d.export.metrics import mask_iou
from gen3d.models.prior import Observed
from gen3d.shapeworld.captions import captions_for
from gen3d.shapeworld.dataset import render_spec
from gen3d.shapeworld.scenes import eval_cameras
from gen3d.shapeworld.spec import (
    COLOURS,
    HELD_OUT,
    SHAPES,
    TOP_SHAPES,
    Part,
    SceneSpec,
    is_held_out,
    nearest_colour,
)

STEPS = 20
SEED = 0
VIEWS_4 = [0, 2, 4, 6]
IMAGE_TARGETS = [1, 3, 5, 7]  # 4 views generated from the observed view at azimuth 0
GEOMETRY_DISTILL_CAPTIONS = 8  # sds and vsd take minutes per caption: the first 8 (1 with --quick)


def heldout_specs(quick: bool) -> list[SceneSpec]:
    """One spec per held-out (shape, colour) pair, sizes alternating; the full run adds a
    two-part variant of each (held-out base with a training pair on top)."""
    bases = sorted(HELD_OUT)[:3] if quick else sorted(HELD_OUT)
    specs = [SceneSpec(s, c, "large" if i % 2 == 0 else "small") for i, (s, c) in enumerate(bases)]
    if not quick:
        for i, (s, c) in enumerate(bases):
            top = next(Part(t, col) for k in range(64) for t, col in [(TOP_SHAPES[(i + k) % len(TOP_SHAPES)],
                                                                      COLOURS[(i + 3 + k) % len(COLOURS)])]
                       if (t, col) not in HELD_OUT)
            specs.append(SceneSpec(s, c, "large", top))
    return specs


def render_truth(spec: SceneSpec, cams: Cameras) -> torch.Tensor:
    """Ground-truth RGBA (V, 4, H, W) in [0, 1]."""
    return render_spec(spec, cams).rgba.permute(0, 3, 1, 2).float()


def mean_iou(sample: torch.Tensor, truth: torch.Tensor) -> float:
    return float(np.mean([mask_iou(s[3], t[3]) for s, t in zip(sample, truth)]))


def shape_identified(spec: SceneSpec, sample: torch.Tensor, cams: Cameras) -> bool:
    """Whether the sample's masks match the captioned shape's better than every other shape's."""
    scores = {shape: mean_iou(sample, render_truth(dataclasses.replace(spec, shape=shape), cams)) for shape in SHAPES}
    return max(scores, key=scores.get) == spec.shape


def colours_right(spec: SceneSpec, sample: torch.Tensor, truth: torch.Tensor) -> float:
    """Share of the caption's parts whose colour the sample gets right (see the module docstring)."""
    truth_rgb = truth[:, :3].permute(0, 2, 3, 1).numpy()
    truth_names = np.array(nearest_colour(truth_rgb)).reshape(truth_rgb.shape[:3])
    inside = (truth[:, 3] > 0.5).numpy() & (sample[:, 3] > 0.5).numpy()
    sample_rgb = sample[:, :3].permute(0, 2, 3, 1).numpy()
    right = []
    for part in spec.parts:
        region = inside & (truth_names == part.colour)
        if not region.any():
            right.append(False)
            continue
        directions = sample_rgb[region] / np.maximum(np.linalg.norm(sample_rgb[region], axis=1, keepdims=True), 1e-6)
        right.append(nearest_colour(directions.mean(0))[0] == part.colour)
    return float(np.mean(right))


def consistency_psnr(images: torch.Tensor, cams: Cameras, held_out: int = 0) -> float | None:
    """PSNR on view `held_out` of a radiance field fitted to the other views (no view dependence)."""
    try:
        from gen3d.config import load_config
        from gen3d.recon.trainer import ReconConfig, ReconTrainer
        from gen3d.settings import configs_dir
    except ImportError:
        return None
    cfg = load_config(ReconConfig, configs_dir() / "recon" / "ci.yaml",
                      ["field.view_dependent=false", "steps=300", "threads=1"])
    keep = [i for i in range(len(cams)) if i != held_out]
    hwc = images.permute(0, 2, 3, 1).contiguous()
    trainer = ReconTrainer(cfg, hwc[keep], cams[keep], seed=SEED)
    trainer.train(cfg.steps)
    return float(trainer.evaluate(hwc[[held_out]], cams[[held_out]])["psnr"])


def _row(caption: str, mode: str, spec: SceneSpec, sample: torch.Tensor, truth: torch.Tensor, cams: Cameras,
         seconds: float, consistency: float | None = None) -> dict:
    return {"caption": caption, "mode": mode, "views": len(cams), "mask_iou": round(mean_iou(sample, truth), 4),
            "shape_ok": float(shape_identified(spec, sample, cams)), "color_ok": colours_right(spec, sample, truth),
            "consistency_psnr": consistency, "seconds": round(seconds, 3)}


def _timed_sample(prior, caption: str, cams: Cameras, observed: Observed | None = None) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = prior.sample(caption, cams, observed, steps=STEPS, generator=torch.Generator().manual_seed(SEED))
    return out, time.perf_counter() - start


def _means(rows: list[dict]) -> list[dict]:
    means = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        group = [r for r in rows if r["mode"] == mode]
        mean = {"caption": "mean", "mode": mode, "views": group[0]["views"]}
        for key in ("mask_iou", "shape_ok", "color_ok", "consistency_psnr", "seconds"):
            values = [r[key] for r in group if r[key] is not None]
            mean[key] = round(float(np.mean(values)), 4) if values else None
        means.append(mean)
    return means


def _grid(panels: list[tuple[str, torch.Tensor]], path: Path, zoom: int = 2) -> None:
    """One row per panel (label above, views composited on white)."""
    tile, label = 64 * zoom, 14
    cols = max(len(images) for _, images in panels)
    grid = Image.new("RGB", (cols * tile, len(panels) * (tile + label)), "white")
    draw = ImageDraw.Draw(grid)
    for row, (text, images) in enumerate(panels):
        rgb = images[:, :3] * images[:, 3:] + (1 - images[:, 3:])
        for col, view in enumerate(rgb):
            array = (view.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            grid.paste(Image.fromarray(array).resize((tile, tile), Image.NEAREST), (col * tile, row * (tile + label) + label))
        draw.text((2, row * (tile + label)), text, fill="black")
    grid.save(path)


def run(quick: bool, out_dir: Path) -> list[dict]:
    from gen3d.models.prior import load_prior

    torch.set_num_threads(1)
    start = time.perf_counter()
    prior = load_prior("shapeworld-mv")
    load_seconds = round(time.perf_counter() - start, 3)
    cams8 = eval_cameras(prior.output_size)
    specs = heldout_specs(quick)
    assert all(is_held_out(s) for s in specs)
    captions = [captions_for(s)[0] for s in specs]
    rows, baseline, panels = [], [], []
    for i, (spec, caption) in enumerate(zip(specs, captions)):
        truth8 = render_truth(spec, cams8)
        sample4, s4 = _timed_sample(prior, caption, cams8[VIEWS_4])
        rows.append(_row(caption, "text", spec, sample4, truth8[VIEWS_4], cams8[VIEWS_4], s4))
        sample8, s8 = _timed_sample(prior, caption, cams8)
        measure = i == 0 or not quick
        rows.append(_row(caption, "text", spec, sample8, truth8, cams8, s8, consistency_psnr(sample8, cams8) if measure else None))
        rows[-1]["ceiling_psnr"] = consistency_psnr(truth8, cams8) if measure else None
        observed = Observed(truth8[[0]], cams8[[0]])
        sample_img, si = _timed_sample(prior, caption, cams8[IMAGE_TARGETS], observed)
        rows.append(_row(caption, "image", spec, sample_img, truth8[IMAGE_TARGETS], cams8[IMAGE_TARGETS], si))
        other = captions[(i + 1) % len(captions)]
        shuffled, ss = _timed_sample(prior, other, cams8[VIEWS_4])
        baseline.append(_row(caption, "shuffled-caption", spec, shuffled, truth8[VIEWS_4], cams8[VIEWS_4], ss))
        panels += [(f"truth: {caption}", truth8), ("text, 8 views", sample8), ("text, 4 views", sample4),
                   ("image (obs. view 0) -> views 1,3,5,7", sample_img)]
        progress(f"samples {i + 1}/{len(specs)}: {caption}")
    rows = [dict(r, mode=f"{r['mode']}-{r['views']}") for r in rows + baseline]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _grid(panels, out_dir / "priors-samples.png")
    means = _means(rows)
    for mean in means:
        if mean["mode"] == "text-8":
            ceilings = [r["ceiling_psnr"] for r in rows if r.get("ceiling_psnr") is not None]
            mean["ceiling_psnr"] = round(float(np.mean(ceilings)), 3) if ceilings else None
    rows += [dict(mean, load_seconds=load_seconds) for mean in means]
    return rows + geometry_rows(captions, quick)


def geometry_rows(captions: list[str], quick: bool) -> list[dict]:
    """The geometric section: text-to-3d jobs per method on the held-out captions, meshes scored."""
    distilled = captions[:1 if quick else GEOMETRY_DISTILL_CAPTIONS]
    fitted = captions[:2] if quick else captions
    plan = {"mv-recon": fitted, TRUTH_VIEWS: fitted, "sds": distilled, "vsd": distilled}
    # sds and vsd at the quick bench's 300 steps even in the full run: the section compares priors,
    # and 1,500 steps on 8 captions would take about three hours on one CPU thread
    return [dict(row, mode="geometry") for row in run_methods(plan, QUICK_DISTILL_STEPS)]
