"""`image-to-4d`: one photo of an object plus a caption of its motion -> a dynamic 3D scene.

The photo (cut out and framed as for image-to-3d) is the 4D prior's observed view at clip time 0
and azimuth 0; the prior generates the camera x time grid conditioned on it and on the caption
(which names the motion: "bouncing", "spinning", ...), and the space-time field is fitted to the
grid plus the photo (weighted higher). Stages, run folder and artifacts are text-to-4d's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from gen3d.cameras import Cameras
from gen3d.data.foreground import ForegroundConfig
from gen3d.data.images import read_png, save_png
from gen3d.errors import UserError
from gen3d.io import slugify
from gen3d.pipelines import text_to_4d
from gen3d.pipelines.image_to_3d import CHECK_SIZE, input_camera, observed_view
from gen3d.pipelines.stages.resources import job_prior
from gen3d.recon import ReconTrainer
from gen3d.runs import Job, RunFolder, StageContext

KIND = "image-to-4d"


@dataclass
class Config(text_to_4d.Config):
    elevation: float = 15.0  # degrees above the object's equator the photo was taken from
    input_weight: float = 3.0  # the photo's loss weight relative to one generated view
    foreground: ForegroundConfig = dataclasses.field(default_factory=ForegroundConfig)


def views(ctx: StageContext) -> None:
    cfg: Config = ctx.config
    prior = job_prior(cfg)
    observed = observed_view(cfg, ctx.inputs, prior.image_size)
    observed.times = torch.zeros(1)
    save_png(observed.images[0].permute(1, 2, 0), ctx.path / "input.png")
    ctx.add_artifact(ctx.path / "input.png", "views", input=True)
    text_to_4d.generate_grid(ctx, observed)


def _trainer(ctx: StageContext, seed: int) -> ReconTrainer:
    cfg: Config = ctx.config
    images, cams, times = text_to_4d.load_grid(ctx.path)
    photo = read_png(ctx.path / "input.png")
    weights = torch.cat([torch.tensor([cfg.input_weight]), torch.ones(len(cams))])
    return ReconTrainer(cfg.recon, torch.cat([photo[None], images]), Cameras.cat([input_camera(cfg.elevation, photo.shape[0]), cams]),
                        seed=seed, view_weights=weights, times=torch.cat([torch.zeros(1), times]))


def build_job(config: Config, inputs: dict, seed: int) -> Job:
    text_to_4d.check_grid(config)
    if config.method != "mv-recon":
        raise UserError(f"image-to-4d supports method mv-recon only, got '{config.method}'")
    if not str(inputs.get("prompt", "")).strip():
        raise UserError("the caption is empty; say how the object moves, e.g. --prompt \"a red sphere bouncing\"")
    observed_view(config, inputs, CHECK_SIZE)  # bad files fail here, before a run folder exists
    return Job(kind=KIND, config=config, inputs=inputs, seed=seed,
               slug=slugify(Path(inputs["image"]).stem, 40, "image"),
               stages=text_to_4d.stages(config, views, _trainer))


def export_mesh(run: RunFolder, fmt: str, resolution: int | None) -> Path:
    """`gen3d export`: one mesh per clip frame again from the run's checkpoint."""
    return text_to_4d.export_mesh(run, fmt, resolution, make_trainer=_trainer)
