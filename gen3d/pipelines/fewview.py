"""`reconstruct --prior`: few-view reconstruction helped by the multi-view prior, in one of two
modes (`prior.mode`, or `--prior-mode`):

- cat3d (default, CAT3D style): the prior generates views at new cameras on an orbit around the
  scene, each set conditioned on the observed views nearest to it; the engine then fits the
  observed and the generated views together, the generated ones down-weighted (`prior.weight`),
  so the prior fills in what the few photos never saw without overruling what they did.
- reconfusion (ReconFusion style): nothing is generated; the engine fits the observed views, and
  after every `prior.sds.every` reconstruction steps a score-distillation step (SDS through the
  prior, as text-to-3d's sds method) pulls renders at a random set of novel cameras towards what
  the prior, conditioned on the observed views nearest to them, finds likely. It is its own
  optimiser step on the same field and optimiser (the engine's step owns its loss), weighted by
  `prior.sds.weight`.

The prior was trained at radius 2.5 around objects centred at the origin, so the scene's cameras
are mapped to that radius (scaled about the origin) before they reach the prior; generated views
come back at the scene's cameras and image size. With `prior.name: null` the prior is off: the
same engine and config as the plain engine, which is the benchmark's baseline.

Stages: load -> views (cat3d only) -> train -> evaluate (PSNR, SSIM and, where held-out views have
alpha, mask IoU) -> export. load, evaluate's PSNR/SSIM and export are `reconstruct`'s own.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gen3d.cameras import Cameras, orbit, random_orbit_set
from gen3d.data import Split
from gen3d.data.images import read_png, resize, save_png
from gen3d.diffusion.distill import anneal_t_range, sds_loss
from gen3d.errors import UserError
from gen3d.export.metrics import mask_iou
from gen3d.io import atomic_output
from gen3d.models.prior import Observed, Prior
from gen3d.pipelines import reconstruct
from gen3d.pipelines.stages.costs import distill_step_seconds, estimate_views_seconds
from gen3d.pipelines.stages.distill import render_for_prior
from gen3d.pipelines.stages.fit import train_checkpointed
from gen3d.pipelines.stages.resources import settings_prior
from gen3d.recon import ReconTrainer
from gen3d.recon.trainer import premultiplied_with_alpha
from gen3d.runs import Job, RunFolder, Stage, StageContext

KIND = "reconstruct-prior"
PRIOR_RADIUS = 2.5  # the camera distance the bundled prior was trained at (ShapeWorld)
PriorMode = Literal["cat3d", "reconfusion"]
MODES = ("cat3d", "reconfusion")


@dataclass
class ScoreRegularizerConfig:
    """reconfusion mode: score distillation at random novel cameras."""

    weight: float = 0.05  # the SDS loss's scale in its optimiser step (the reconstruction loss has 1)
    every: int = 2  # one regulariser step after every this many reconstruction steps
    render_size: int = 24  # rendered pixels per side at the novel cameras, upsampled to the prior's size
    guidance: float = 7.5
    elevations: list[float] = dataclasses.field(default_factory=lambda: [5.0, 40.0])  # [min, max] degrees
    t_start: list[float] = dataclasses.field(default_factory=lambda: [0.02, 0.98])  # diffusion time range, annealed
    t_end: list[float] = dataclasses.field(default_factory=lambda: [0.02, 0.5])  # to this by the last step
    anneal: Literal["linear", "sqrt"] = "sqrt"
    weighting: Literal["dreamfusion", "uniform"] = "dreamfusion"


@dataclass
class PriorViewsConfig:
    name: str | None = "shapeworld-mv"  # None: the prior is off (the plain engine)
    model_path: str | None = None
    mode: PriorMode = "cat3d"  # cat3d: generated views at new cameras; reconfusion: an SDS regulariser
    novel_views: int = 8  # cat3d: generated views, evenly spaced in azimuth
    elevations: list[float] = dataclasses.field(default_factory=lambda: [15.0, 30.0])  # cat3d: cycled over novel views
    steps: int = 20  # cat3d: sampler steps per set
    guidance: float | None = None  # cat3d: None is the prior's default
    weight: float = 0.3  # cat3d: a generated view's loss weight relative to an observed one
    sds: ScoreRegularizerConfig = dataclasses.field(default_factory=ScoreRegularizerConfig)


@dataclass
class Config(reconstruct.Config):
    prior: PriorViewsConfig = dataclasses.field(default_factory=PriorViewsConfig)


def generates_views(cfg: Config) -> bool:
    return cfg.prior.name is not None and cfg.prior.mode == "cat3d" and cfg.prior.novel_views > 0


def regularises(cfg: Config) -> bool:
    return cfg.prior.name is not None and cfg.prior.mode == "reconfusion"


# --- cameras between the scene and the prior's frame -----------------------------------------

def scene_radius(cameras: Cameras) -> float:
    """Mean distance of the cameras from the origin, where the object is assumed to sit."""
    return float(cameras.c2w[:, :3, 3].norm(dim=-1).mean())


def to_prior_frame(cameras: Cameras, radius: float, size: int) -> Cameras:
    """The same cameras moved (about the origin) to the prior's radius, at its image size."""
    c2w = cameras.c2w.clone()
    c2w[:, :3, 3] *= PRIOR_RADIUS / radius
    return Cameras(c2w, cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width, cameras.height).resized(size, size)


def fov_y_deg(cameras: Cameras) -> float:
    """The vertical field of view of the first camera, in degrees."""
    return math.degrees(2 * math.atan(cameras.height / (2 * float(cameras.fy[0]))))


def novel_cameras(observed: Cameras, count: int, elevations: list[float]) -> Cameras:
    """`count` cameras on an orbit at the observed cameras' mean radius and field of view, evenly
    spaced in azimuth and offset half a step from the first observed camera."""
    centres = observed.c2w[:, :3, 3]
    start = math.degrees(math.atan2(float(centres[0, 1]), float(centres[0, 0])))
    azimuths = [start + 360.0 * (k + 0.5) / count for k in range(count)]
    elevs = [elevations[k % len(elevations)] for k in range(count)]
    return orbit(elevs, azimuths, scene_radius(observed), fov_y_deg(observed), observed.width, observed.height)


def nearest_views(observed: Cameras, targets: Cameras, k: int) -> list[int]:
    """Indices of the `k` observed cameras whose directions from the origin are closest to the
    targets' mean direction."""
    dirs = F.normalize(observed.c2w[:, :3, 3], dim=-1)
    target = F.normalize(targets.c2w[:, :3, 3].mean(0), dim=0)
    return torch.argsort(dirs @ target, descending=True, stable=True)[:k].tolist()


# --- images ------------------------------------------------------------------------------------

def straight_rgba(split: Split, background: tuple[float, float, float], size: int) -> Tensor:
    """A split's images as straight RGBA (N, 4, size, size) for the prior (alpha 1 where it has none)."""
    premult, alpha = premultiplied_with_alpha(split.images, split.alpha, torch.tensor(background))
    if alpha is None:
        alpha = torch.ones_like(premult[..., :1])
    small = torch.stack([resize(image, (size, size)) for image in torch.cat([premult, alpha], -1)])
    a = small[..., 3:]
    return torch.cat([(small[..., :3] / a.clamp_min(1e-6)).clamp(0, 1) * (a > 0), a], -1).permute(0, 3, 1, 2)


def to_scene_images(rgba: Tensor, width: int, height: int, background: tuple[float, float, float]) -> tuple[Tensor, Tensor]:
    """Straight RGBA (V, H', W', 4) at the prior's size -> RGB over the scene background (V, H, W, 3)
    and alpha (V, H, W, 1) at the scene's size."""
    premult = torch.cat([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], -1).permute(0, 3, 1, 2)
    big = F.interpolate(premult, size=(height, width), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    alpha = big[..., 3:].clamp(0, 1)
    return (big[..., :3] + torch.tensor(background) * (1 - alpha)).clamp(0, 1), alpha


def generate(prior: Prior, observed: Observed, targets: Cameras, radius: float, *, steps: int,
             guidance: float | None, generator: torch.Generator) -> Tensor:
    """Straight RGBA (V, 4, S, S) at `targets` (scene frame), sampled one set at a time, each
    conditioned on the observed views nearest to that set."""
    size = prior.image_size
    obs_cams = to_prior_frame(observed.cameras, radius, size)
    outputs = []
    for start in range(0, len(targets), prior.views_per_set):
        chunk = targets[list(range(start, min(start + prior.views_per_set, len(targets))))]
        pick = nearest_views(observed.cameras, chunk, min(prior.max_observed, len(observed.images)))
        obs = Observed(observed.images[pick], obs_cams[pick])
        outputs.append(prior.sample(None, to_prior_frame(chunk, radius, size), obs, steps=steps,
                                    guidance=guidance, generator=generator))
    return torch.cat(outputs)


class ScoreRegularizer:
    """ReconFusion's regulariser on a trainer's field: each call renders one set of the prior's
    views at random novel cameras on the observed cameras' orbit and takes one optimiser step on
    the SDS loss through the prior, conditioned on the observed views nearest to that set.

    Every random draw comes from the trainer's generator and the step uses the trainer's optimiser,
    so the trainer's `state_dict()` still resumes exactly. The diffusion time range anneals over
    `total` reconstruction steps."""

    def __init__(self, trainer: ReconTrainer, prior: Prior, observed: Observed, cfg: ScoreRegularizerConfig,
                 total: int):
        self.trainer, self.prior, self.cfg, self.total = trainer, prior, cfg, total
        self.observed_cameras = observed.cameras
        self.radius = scene_radius(observed.cameras)
        self.observed = Observed(observed.images, to_prior_frame(observed.cameras, self.radius, prior.image_size))
        self.fov_y = fov_y_deg(observed.cameras)

    def __call__(self) -> float:
        t, c, prior = self.trainer, self.cfg, self.prior
        cams = random_orbit_set(prior.views_per_set, c.elevations, self.radius, self.fov_y, c.render_size, t.generator)
        pick = nearest_views(self.observed_cameras, cams, min(prior.max_observed, len(self.observed.images)))
        observed = Observed(self.observed.images[pick], self.observed.cameras[pick])
        cond, uncond = prior.condition(None, to_prior_frame(cams, self.radius, prior.image_size), observed)
        rgba = render_for_prior(t.renderer, t.field, cams, "alpha", t.generator, prior.image_size)
        t_range = anneal_t_range(t.step_count, self.total, tuple(c.t_start), tuple(c.t_end), c.anneal)
        loss, _ = sds_loss(prior.guided(cond, uncond, c.guidance), prior.encode(rgba), t.generator, cond,
                           t_range=t_range, weighting=c.weighting, group=prior.views_per_set)
        t.optimizer.zero_grad(set_to_none=True)
        (c.weight * loss).backward()
        t.optimizer.step()
        return float(loss.detach())


def regularised_step(trainer: ReconTrainer, regularizer: ScoreRegularizer, every: int) -> Callable[[], dict[str, float]]:
    """A training step: the trainer's, then the regulariser's after every `every`-th; the SDS loss
    joins the step's stats."""
    def step() -> dict[str, float]:
        stats = trainer.step()
        if trainer.step_count % every == 0:
            stats["sds_loss"] = regularizer()
        return stats
    return step


# --- stages --------------------------------------------------------------------------------------

def views(ctx: StageContext) -> None:
    """cat3d: generated views as `generated/NNN.png` (RGBA at the prior's size) and `generated.json`
    (their scene cameras)."""
    cfg: Config = ctx.config
    data = reconstruct.scene_data(ctx)
    prior = settings_prior(cfg, cfg.prior.name, cfg.prior.model_path)
    train = data.train
    targets = novel_cameras(train.cameras, cfg.prior.novel_views, cfg.prior.elevations)
    rgba = generate(prior, observed_views(ctx, prior), targets, scene_radius(train.cameras), steps=cfg.prior.steps,
                    guidance=cfg.prior.guidance, generator=ctx.generator)
    for i, image in enumerate(rgba):
        path = ctx.path / "generated" / f"{i:03d}.png"
        save_png(image.permute(1, 2, 0), path)
        ctx.add_artifact(path, "views", generated=True, view=i)
    record = {"views": [f"generated/{i:03d}.png" for i in range(len(rgba))], "c2w": targets.c2w.tolist()}
    ctx.log(f"{len(rgba)} views generated by {cfg.prior.name} around {len(train)} observed views")
    path = ctx.path / "generated.json"
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(record))
    ctx.add_artifact(path, "views")


def observed_views(ctx: StageContext, prior: Prior) -> Observed:
    """The training views as the prior's observed views: straight RGBA at its size, scene cameras."""
    data = reconstruct.scene_data(ctx)
    return Observed(straight_rgba(data.train, data.scene.background, prior.image_size), data.train.cameras)


def training_set(ctx: StageContext) -> tuple[Tensor, Cameras, Tensor, Tensor | None]:
    """Observed plus generated views (cat3d; read back from their PNGs, so resumed runs fit the
    same 8-bit images): images (N, H, W, 3), cameras, per-view weights and alpha (None without)."""
    cfg: Config = ctx.config
    data = reconstruct.scene_data(ctx)
    train = data.train
    if not generates_views(cfg):
        return train.images, train.cameras, torch.ones(len(train)), train.alpha
    record = json.loads((ctx.path / "generated.json").read_text())
    rgba = torch.stack([read_png(ctx.path / name) for name in record["views"]])
    images, alpha = to_scene_images(rgba, train.cameras.width, train.cameras.height, data.scene.background)
    fov_source = train.cameras[[0] * len(rgba)]
    cams = Cameras(torch.tensor(record["c2w"], dtype=torch.float32), fov_source.fx, fov_source.fy,
                   fov_source.cx, fov_source.cy, fov_source.width, fov_source.height)
    weights = torch.cat([torch.ones(len(train)), torch.full((len(rgba),), cfg.prior.weight)])
    all_alpha = None if train.alpha is None else torch.cat([train.alpha, alpha])
    return torch.cat([train.images, images]), Cameras.cat([train.cameras, cams]), weights, all_alpha


def train(ctx: StageContext) -> None:
    cfg: Config = ctx.config
    data = reconstruct.scene_data(ctx)
    images, cams, weights, alpha = training_set(ctx)
    trainer = ReconTrainer(reconstruct.recon_config(cfg, data.scene), images, cams, seed=ctx.stage_seed,
                           view_weights=weights, alpha=alpha)
    step = None
    if regularises(cfg):
        prior = settings_prior(cfg, cfg.prior.name, cfg.prior.model_path)
        regularizer = ScoreRegularizer(trainer, prior, observed_views(ctx, prior), cfg.prior.sds, cfg.recon.steps)
        step = regularised_step(trainer, regularizer, cfg.prior.sds.every)
        ctx.log(f"reconfusion: an SDS step through {cfg.prior.name} after every {cfg.prior.sds.every} steps")
    train_checkpointed(ctx, trainer, cfg.recon.steps, cfg.train.checkpoint_every, cfg.train.log_every, step)
    ctx.shared["trainer"] = trainer


def evaluate(ctx: StageContext) -> None:
    """reconstruct's PSNR/SSIM, plus mask IoU of the rendered opacity where held-out views have alpha."""
    reconstruct.evaluate(ctx)
    cfg: Config = ctx.config
    holdout = reconstruct.scene_data(ctx).holdout
    if holdout is None or holdout.alpha is None:
        return
    if cfg.evaluate.max_views is not None:
        holdout = reconstruct.subset(holdout, list(range(min(cfg.evaluate.max_views, len(holdout)))))
    opacity = reconstruct.trained_engine(ctx).render(holdout.cameras)["opacity"]
    ious = [mask_iou(o, a[..., 0]) for o, a in zip(opacity, holdout.alpha)]
    ctx.set_metrics(mask_iou=round(sum(ious) / len(ious), 4))


def _estimate_views(job: Job) -> float:
    p = job.config.prior
    return estimate_views_seconds(p.novel_views, p.steps)


def _estimate_train(job: Job) -> float:
    cfg: Config = job.config
    seconds = cfg.recon.steps * cfg.recon.batch_rays * reconstruct.SECONDS_PER_TRAIN_RAY
    if regularises(cfg):
        sds = cfg.prior.sds
        seconds += cfg.recon.steps // sds.every * distill_step_seconds(sds.render_size)
    return seconds


def build_job(config: Config, inputs: dict, seed: int) -> Job:
    if config.prior.sds.every < 1:
        raise UserError(f"config key 'prior.sds.every' must be at least 1, got {config.prior.sds.every}")
    slug = Path(inputs["scene"]).name
    if config.prior.name is not None:
        slug += f"-{config.prior.name}" + ("-reconfusion" if regularises(config) else "")
    stages = [Stage("load", reconstruct.load, lambda job: 1.0)]
    if generates_views(config):
        stages.append(Stage("views", views, _estimate_views))
    return Job(kind=KIND, config=config, inputs=inputs, seed=seed, slug=slug, stages=stages + [
        Stage("train", train, _estimate_train),
        Stage("evaluate", evaluate, reconstruct.estimate_evaluate),
        Stage("export", reconstruct.export, reconstruct.estimate_export),
    ])


def export_mesh(run: RunFolder, fmt: str, resolution: int | None) -> Path:
    """`gen3d export`: reconstruct's, reading this pipeline's config."""
    return reconstruct.export_mesh(run, fmt, resolution, config_type=Config)
