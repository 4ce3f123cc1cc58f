"""`gen3d bench 4d`: text-to-4d on held-out animated captions, scored against ground truth over time.

Every caption pairs a held-out (shape, colour) with a motion; a full text-to-4d job runs at 8 and
at 32 frames with the bundled 4D prior (already loaded: its load time is its own row). Scores:
- mask_iou: the field's alpha against the ground-truth mesh's at the 8 evaluation-orbit cameras x
  8 evenly spaced clip times (the same 64 views at both frame counts);
- trajectory_error: mean distance between the centre of each exported frame mesh's bounding box
  and the ground-truth centre at that time, in world units (objects span about 0.7-1.0);
- seconds end to end, and field_mb (parameters and buffers of the space-time field);
- for scale, a motionless baseline: the ground truth of the first frame held still, scored the
  same way (static_iou, static_trajectory_error); a result above it has captured the motion.
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
from gen3d.export.metrics import mask_iou
from gen3d.export.writers import Z_UP_TO_Y_UP
from gen3d.pipelines import text_to_4d
from gen3d.pipelines.stages.resources import cached_prior
from gen3d.render.mesh import render_mesh
from gen3d.runs import read_manifest, run_job
from gen3d.shapeworld import HELD_OUT
from gen3d.shapeworld.animated import (
    centre_at,
    mesh_at,
    motions_for,
    parse_animated_caption,
)
from gen3d.shapeworld.dataset import SHADING
from gen3d.shapeworld.scenes import eval_cameras

SEED = 0
FRAME_COUNTS = (8, 32)
_PHRASES = {"bounce": "bouncing", "slide": "sliding to the right", "spin": "spinning", "grow": "growing",
            "shrink": "shrinking", "turn": "turning its head"}


def captions(quick: bool) -> list[str]:
    """One caption per held-out (shape, colour) pair, motions taking turns, sizes alternating."""
    out = []
    for i, (shape, colour) in enumerate(sorted(HELD_OUT)):
        options = motions_for(shape)
        motion = options[-1] if len(options) > 5 else options[i % len(options)]  # the snowman turns its head
        out.append(f"a {('large', 'small')[i % 2]} {colour} {shape} {_PHRASES[motion]}")
    return out[:2] if quick else out


def _renders(run_dir: Path, frame: int) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(Image.open(run_dir / "renders" / f"{frame:02d}-{v:02d}.png")))
                        for v in range(8)]).float() / 255


def _mesh_centre_z_up(path: Path) -> np.ndarray:
    vertices = np.asarray(trimesh.load(path, force="mesh").vertices)
    vertices = vertices @ np.linalg.inv(Z_UP_TO_Y_UP)[:3, :3].T  # GLB is +y up; the world is z up
    return (vertices.min(0) + vertices.max(0)) / 2


def score(run_dir: Path, caption: str) -> dict:
    """mask_iou over evaluation cameras x times and trajectory_error over the meshed frames."""
    anim = parse_animated_caption(caption)
    manifest = read_manifest(run_dir)
    eval_times = text_to_4d.clip_times(manifest["config"]["eval_frames"]).tolist()
    ious, static_ious = [], []
    first = None
    for k, t in enumerate(eval_times):
        renders = _renders(run_dir, k)
        truth = render_mesh(mesh_at(anim, t), eval_cameras(renders.shape[1]), shading=SHADING).rgba[..., 3]
        first = truth if first is None else first
        ious.append(mask_iou(renders[..., 3], truth))
        static_ious.append(mask_iou(first, truth))
    meshes = [a for a in manifest["artifacts"] if a["role"] == "mesh" and "time" in a]
    errors = [float(np.linalg.norm(_mesh_centre_z_up(run_dir / a["path"]) - centre_at(anim, a["time"]))) for a in meshes]
    static_errors = [float(np.linalg.norm(centre_at(anim, 0.0) - centre_at(anim, t))) for t in eval_times]
    frames = manifest["metrics"]["frames"]
    return {"mask_iou": float(np.mean(ious)), "static_iou": float(np.mean(static_ious)),
            "trajectory_error": float(np.mean(errors)) if errors else float("nan"),
            "static_trajectory_error": float(np.mean(static_errors)),
            "meshed_frames": f"{len(errors)}/{frames}", "field_mb": manifest["metrics"]["field_mb"]}


def _mean_row(frames: int, rows: list[dict]) -> dict:
    keys = ("mask_iou", "static_iou", "trajectory_error", "static_trajectory_error", "seconds", "field_mb")
    return {"caption": "mean", "frames": frames, **{k: float(np.nanmean([r[k] for r in rows])) for k in keys}}


def run(quick: bool, out_dir: Path) -> list[dict]:
    start = time.perf_counter()
    cached_prior("shapeworld-4d", None)
    rows: list[dict] = [{"caption": "load", "frames": "-", "seconds": time.perf_counter() - start}]
    with tempfile.TemporaryDirectory() as tmp:
        for frames in FRAME_COUNTS:
            cfg = text_to_4d.Config()
            cfg.grid.frames = frames
            cfg.recon.threads = 0  # keep the process's thread count (OMP_NUM_THREADS), recorded in the report's env
            frame_rows = []
            for i, caption in enumerate(captions(quick)):
                run_dir = Path(tmp) / f"{frames}-{i}"
                began = time.perf_counter()
                run_job(text_to_4d.build_job(cfg, {"prompt": caption}, SEED), run_dir, echo=lambda _: None)
                seconds = time.perf_counter() - began
                frame_rows.append({"caption": caption, "frames": frames, **score(run_dir, caption), "seconds": seconds})
                progress(f"{frames} frames {i + 1}/{len(captions(quick))}: {caption}")
            rows += frame_rows + [_mean_row(frames, frame_rows)]
    return rows
