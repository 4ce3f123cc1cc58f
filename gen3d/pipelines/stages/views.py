"""Generated views: sampled pass by pass, saved as PNGs with their cameras, and read back.

Generated views are always read back from their PNGs before fitting, so a fresh run and a resumed
one fit exactly the same 8-bit images.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gen3d.cameras import Cameras, from_fov, pass_cameras
from gen3d.config import ranged
from gen3d.data.images import read_png, save_png
from gen3d.errors import UserError
from gen3d.io import atomic_output
from gen3d.models.prior import Observed, Prior
from gen3d.runs import StageContext
from gen3d.shapeworld.scenes import FOV_Y_DEG, RADIUS


@dataclass
class ViewsConfig:
    passes: list[int] = dataclasses.field(default_factory=lambda: [8])  # views per sampling pass
    # cycled over views: the prior's lowest and highest training elevations, so low views bound the
    # object's underside and high ones its top (15/30 left 0.13 radii of wedge under a cube)
    elevations: list[float] = dataclasses.field(default_factory=lambda: [5.0, 40.0])
    steps: int = ranged(20, low=1)  # sampler steps per pass
    guidance: float | None = None  # None: the prior's default


def view_cameras(cfg: ViewsConfig, size: int) -> Cameras:
    """The cameras of an object job's generated views: `cfg.passes` around the object in the
    prior's framing, at `size` pixels."""
    return pass_cameras(cfg.passes, cfg.elevations, RADIUS, FOV_Y_DEG, size)


def generate_views(prior: Prior, prompt: str | None, cameras: Cameras, passes: list[int], *,
                   observed: Observed | None, steps: int, guidance: float | None,
                   generator: torch.Generator) -> Tensor:
    """RGBA views (V, 4, H, W) sampled pass by pass: the first pass from the prompt (and the given
    observed views), every later pass also conditioned on evenly spaced earlier outputs, up to the
    prior's `max_observed`, so all views show one object."""
    outputs: list[Tensor] = []
    start = 0
    for count in passes:
        obs = _chained_observed(prior, observed, cameras[:start], torch.cat(outputs) if outputs else None)
        outputs.append(prior.sample(prompt, cameras[list(range(start, start + count))], obs, steps=steps,
                                    guidance=guidance, generator=generator))
        start += count
    return torch.cat(outputs)


def _chained_observed(prior: Prior, observed: Observed | None, done_cameras: Cameras,
                      generated: Tensor | None) -> Observed | None:
    have = 0 if observed is None else len(observed.images)
    free = prior.max_observed - have
    if generated is None or free <= 0:
        return observed
    pick = np.linspace(0, len(generated) - 1, min(free, len(generated))).round().astype(int).tolist()
    images, cams = generated[pick], done_cameras[pick]
    if observed is not None and have:
        images, cams = torch.cat([observed.images, images]), Cameras.cat([observed.cameras, cams])
    return Observed(images, cams)


def save_views(ctx: StageContext, rgba: Tensor, cameras: Cameras, fov_y_deg: float) -> None:
    """`views/NNN.png` (RGBA), a composited grid `views.png` and `views.json` (the cameras)."""
    images = rgba.permute(0, 2, 3, 1)
    for i, image in enumerate(images):
        path = ctx.path / "views" / f"{i:03d}.png"
        save_png(image, path)
        ctx.add_artifact(path, "views", view=i)
    over_white = images[..., :3] * images[..., 3:] + (1 - images[..., 3:])
    columns = min(len(images), 8)
    rows = -(-len(images) // columns)
    h, w = images.shape[1:3]
    grid = torch.ones(rows * h, columns * w, 3)
    for i, image in enumerate(over_white):
        grid[(i // columns) * h:(i // columns + 1) * h, (i % columns) * w:(i % columns + 1) * w] = image
    save_png(grid, ctx.path / "views.png")
    ctx.add_artifact(ctx.path / "views.png", "views", grid=True)
    record = {"fov_y_deg": fov_y_deg, "size": [cameras.width, cameras.height],
              "c2w": cameras.c2w.tolist(), "views": [f"views/{i:03d}.png" for i in range(len(images))]}
    with atomic_output(ctx.path / "views.json") as tmp:
        tmp.write_text(json.dumps(record))
    ctx.add_artifact(ctx.path / "views.json", "views")


def load_views(run_path: Path) -> tuple[Tensor, Cameras]:
    """The saved views as straight RGBA (V, H, W, 4) in [0, 1] and their cameras."""
    path = run_path / "views.json"
    if not path.is_file():
        raise UserError(f"{path}: missing; the views stage has not finished")
    record = json.loads(path.read_text())
    images = torch.stack([read_png(run_path / name) for name in record["views"]])
    width, height = record["size"]
    return images, from_fov(torch.tensor(record["c2w"], dtype=torch.float32), record["fov_y_deg"], width, height)
