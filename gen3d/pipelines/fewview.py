"""`reconstruct --prior`: few-view reconstruction helped by the multi-view prior (CAT3D style).

The prior generates views at new cameras on an orbit around the scene, each set conditioned on
the observed views nearest to it; the engine then fits the observed and the generated views
together, the generated ones down-weighted (`prior.weight`), so the prior fills in what the few
photos never saw without overruling what they did.

The prior was trained at radius 2.5 around objects centred at the origin, so the scene's cameras
are mapped to that radius (scaled about the origin) before they reach the prior; generated views
come back at the scene's cameras and image size. With `prior.name: null` no views are generated:
the same stages, engine and config as the plain engine, which is the benchmark's baseline.

Stages: load -> views -> train -> evaluate (PSNR, SSIM and, where held-out views have alpha, mask
IoU) -> export. load, evaluate's PSNR/SSIM and export are `reconstruct`'s own.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gen3d.cameras import Cameras, orbit
from gen3d.data import Split
from gen3d.data.images import resize
from gen3d.export.metrics import mask_iou
from gen3d.models.prior import Observed, Prior
from gen3d.pipelines import reconstruct
from gen3d.pipelines.common import read_png, save_png, train_checkpointed
from gen3d.pipelines.text_to_3d import (
    PRIOR_LOAD_SECONDS,
    SECONDS_PER_VIEW_STEP,
    cached_prior,
)
from gen3d.recon import ReconTrainer
from gen3d.recon.trainer import premultiply
from gen3d.runs import Job, Stage, StageContext, atomic_output

KIND = "reconstruct-prior"
PRIOR_RADIUS = 2.5  # the camera distance the bundled prior was trained at (ShapeWorld)


@dataclass
class PriorViewsConfig:
    name: str | None = "shapeworld-mv"  # None: no generated views (the plain engine)
    model_path: str | None = None
    novel_views: int = 8  # generated views, evenly spaced in azimuth
    elevations: list[float] = dataclasses.field(default_factory=lambda: [15.0, 30.0])  # cycled over novel views
    steps: int = 20  # sampler steps per set
    guidance: float | None = None  # None: the prior's default
    weight: float = 0.3  # a generated view's loss weight relative to an observed one


@dataclass
class Config(reconstruct.Config):
    prior: PriorViewsConfig = dataclasses.field(default_factory=PriorViewsConfig)


# --- cameras between the scene and the prior's frame -----------------------------------------

def scene_radius(cameras: Cameras) -> float:
    """Mean distance of the cameras from the origin, where the object is assumed to sit."""
    return float(cameras.c2w[:, :3, 3].norm(dim=-1).mean())


def to_prior_frame(cameras: Cameras, radius: float, size: int) -> Cameras:
    """The same cameras moved (about the origin) to the prior's radius, at its image size."""
    c2w = cameras.c2w.clone()
    c2w[:, :3, 3] *= PRIOR_RADIUS / radius
    return Cameras(c2w, cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width, cameras.height).resized(size, size)


def novel_cameras(observed: Cameras, count: int, elevations: list[float]) -> Cameras:
    """`count` cameras on an orbit at the observed cameras' mean radius and field of view, evenly
    spaced in azimuth and offset half a step from the first observed camera."""
    centres = observed.c2w[:, :3, 3]
    start = math.degrees(math.atan2(float(centres[0, 1]), float(centres[0, 0])))
    azimuths = [start + 360.0 * (k + 0.5) / count for k in range(count)]
    elevs = [elevations[k % len(elevations)] for k in range(count)]
    fov_y = math.degrees(2 * math.atan(observed.height / (2 * float(observed.fy[0]))))
    return orbit(elevs, azimuths, scene_radius(observed), fov_y, observed.width, observed.height)


def nearest_views(observed: Cameras, targets: Cameras, k: int) -> list[int]:
    """Indices of the `k` observed cameras whose directions from the origin are closest to the
    targets' mean direction."""
    dirs = F.normalize(observed.c2w[:, :3, 3], dim=-1)
    target = F.normalize(targets.c2w[:, :3, 3].mean(0), dim=0)
    return torch.argsort(dirs @ target, descending=True, stable=True)[:k].tolist()


# --- images ------------------------------------------------------------------------------------

def straight_rgba(split: Split, background: tuple[float, float, float], size: int) -> Tensor:
    """A split's images as straight RGBA (N, 4, size, size) for the prior (alpha 1 where it has none)."""
    premult, alpha = premultiply(split.images, split.alpha, torch.tensor(background))
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


# --- stages --------------------------------------------------------------------------------------

def views(ctx: StageContext) -> None:
    """Generated views as `generated/NNN.png` (RGBA at the prior's size) and `generated.json` (their
    scene cameras); nothing when the prior is off."""
    cfg: Config = ctx.config
    record: dict = {"views": [], "c2w": []}
    if cfg.prior.name is not None and cfg.prior.novel_views > 0:
        data = reconstruct._scene_data(ctx)
        prior = cached_prior(cfg.prior.name, cfg.prior.model_path)
        train = data.train
        observed = Observed(straight_rgba(train, data.scene.background, prior.image_size), train.cameras)
        targets = novel_cameras(train.cameras, cfg.prior.novel_views, cfg.prior.elevations)
        rgba = generate(prior, observed, targets, scene_radius(train.cameras), steps=cfg.prior.steps,
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


def training_set(ctx: StageContext) -> tuple[Tensor, Cameras, Tensor, Tensor | None]:
    """Observed plus generated views (read back from their PNGs, so resumed runs fit the same
    8-bit images): images (N, H, W, 3), cameras, per-view weights and alpha (None without)."""
    cfg: Config = ctx.config
    data = reconstruct._scene_data(ctx)
    train = data.train
    record = json.loads((ctx.path / "generated.json").read_text())
    if not record["views"]:
        return train.images, train.cameras, torch.ones(len(train)), train.alpha
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
    data = reconstruct._scene_data(ctx)
    images, cams, weights, alpha = training_set(ctx)
    trainer = ReconTrainer(reconstruct.recon_config(cfg, data.scene), images, cams, seed=ctx.stage_seed,
                           view_weights=weights, alpha=alpha)
    train_checkpointed(ctx, trainer, cfg.recon.steps, cfg.train.checkpoint_every, cfg.train.log_every)
    ctx.shared["trainer"] = trainer


def evaluate(ctx: StageContext) -> None:
    """reconstruct's PSNR/SSIM, plus mask IoU of the rendered opacity where held-out views have alpha."""
    reconstruct.evaluate(ctx)
    cfg: Config = ctx.config
    holdout = reconstruct._scene_data(ctx).holdout
    if holdout is None or holdout.alpha is None:
        return
    if cfg.evaluate.max_views is not None:
        holdout = reconstruct.subset(holdout, list(range(min(cfg.evaluate.max_views, len(holdout)))))
    opacity = reconstruct._trained(ctx).render(holdout.cameras)["opacity"]
    ious = [mask_iou(o, a[..., 0]) for o, a in zip(opacity, holdout.alpha)]
    ctx.set_metrics(mask_iou=round(sum(ious) / len(ious), 4))


def _estimate_views(job: Job) -> float:
    p = job.config.prior
    if p.name is None:
        return 0.0
    return PRIOR_LOAD_SECONDS + p.novel_views * p.steps * SECONDS_PER_VIEW_STEP


def _estimate_train(job: Job) -> float:
    cfg: Config = job.config
    return cfg.recon.steps * cfg.recon.batch_rays * reconstruct.SECONDS_PER_TRAIN_RAY


def build_job(config: Config, inputs: dict, seed: int) -> Job:
    slug = Path(inputs["scene"]).name + ("" if config.prior.name is None else f"-{config.prior.name}")
    return Job(kind=KIND, config=config, inputs=inputs, seed=seed, slug=slug, stages=[
        Stage("load", reconstruct.load, lambda job: 1.0),
        Stage("views", views, _estimate_views),
        Stage("train", train, _estimate_train),
        Stage("evaluate", evaluate, reconstruct._estimate_evaluate),
        Stage("export", reconstruct.export, reconstruct._estimate_export),
    ])
