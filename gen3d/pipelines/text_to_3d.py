"""`text-to-3d`: a prompt -> a 3D object, by one of three methods.

- mv-recon (default): the multi-view prior generates views around the object (in passes, later
  passes conditioned on earlier views), and the reconstruction engine fits a field to them with the
  generated alpha as a mask loss. Stages: views -> fit -> export.
- sds: a field optimised from scratch by score distillation through the prior: each step renders
  one set of views at the prior's cameras (random azimuth offset and elevation), encodes them
  differentiably and follows the prior's guided score. Stages: distill -> export.
- vsd: sds with variational score distillation (a LoRA copy of the prior fits the current renders).

Export writes the mesh (GLB/PLY/OBJ), a point cloud, a turntable of the mesh and renders of the
field at the ShapeWorld evaluation orbit (role render), which the benchmark scores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from gen3d.cameras import Cameras
from gen3d.diffusion.distill import VSD, anneal_t_range, sds_loss
from gen3d.errors import UserError
from gen3d.fields.nerf import FieldConfig, NerfField
from gen3d.models.prior import Prior
from gen3d.pipelines.common import (
    PRIOR_LOAD_SECONDS,
    SECONDS_PER_DISTILL_PIXEL,
    SECONDS_PER_DISTILL_VIEW,
    ExportConfig,
    PriorBackground,
    cached_prior,
    estimate_fit_seconds,
    estimate_object_export_seconds,
    estimate_views_seconds,
    export_field,
    fit_views,
    fitted_model,
    generate_views,
    load_views,
    object_export_config,
    object_recon_config,
    pass_cameras,
    random_orbit_set,
    render_for_prior,
    save_renders,
    save_views,
)
from gen3d.recon import ReconConfig, ReconTrainer
from gen3d.render.volume import VolumeRenderer
from gen3d.io import slugify
from gen3d.runs import Job, Stage, StageContext
from gen3d.shapeworld.scenes import ELEVATION_RANGE_DEG, FOV_Y_DEG, RADIUS, eval_cameras

KIND = "text-to-3d"
Method = Literal["mv-recon", "sds", "vsd"]
METHODS = ("mv-recon", "sds", "vsd")

VSD_LORA_FACTOR = 1.0  # VSD's LoRA update per step, relative to the guided prior call


@dataclass
class ViewsConfig:
    passes: list[int] = dataclasses.field(default_factory=lambda: [8])  # views per sampling pass
    elevations: list[float] = dataclasses.field(default_factory=lambda: [15.0, 30.0])  # cycled over views
    steps: int = 20  # sampler steps per pass
    guidance: float | None = None  # None: the prior's default


@dataclass
class FitConfig:
    checkpoint_every: int = 100
    log_every: int = 25


@dataclass
class DistillConfig:
    steps: int = 1500
    lr: float = 1e-2
    render_size: int = 24  # rendered pixels per side, upsampled to the prior's image size
    step_size: float = 0.06  # ray-marching step while distilling (recon.render.step_size is the fit's)
    coarse_steps: int = 300  # only the coarse hash levels are active before this step
    coarse_levels: int = 4
    guidance: float = 30.0  # SDS needs a large scale; VSD uses vsd_guidance
    vsd_guidance: float = 7.5
    t_start: list[float] = dataclasses.field(default_factory=lambda: [0.02, 0.98])
    t_end: list[float] = dataclasses.field(default_factory=lambda: [0.02, 0.5])
    anneal: Literal["linear", "sqrt"] = "sqrt"
    weighting: Literal["dreamfusion", "uniform"] = "dreamfusion"
    elevations: list[float] = dataclasses.field(default_factory=lambda: list(ELEVATION_RANGE_DEG))  # [min, max]
    background: PriorBackground = "alpha"  # alpha: RGBA to the prior; else composite
    blob_density: float = 6.0  # pre-activation density added at the centre: SDS starts from an object
    blob_radius: float = 0.4
    density_bias: float = -3.0  # pre-activation density added everywhere: empty space around the blob
    lora_rank: int = 4
    lora_lr: float = 1e-3
    checkpoint_every: int = 250
    log_every: int = 25


@dataclass
class Config:
    method: Method = "mv-recon"
    prior: str = "shapeworld-mv"
    model_path: str | None = None  # a prior folder instead of the bundled weights
    render_size: int = 64  # pixels of the renders at the evaluation orbit
    views: ViewsConfig = dataclasses.field(default_factory=ViewsConfig)
    recon: ReconConfig = dataclasses.field(default_factory=object_recon_config)  # field, renderer (all methods) and the fit
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    export: ExportConfig = dataclasses.field(default_factory=object_export_config)


def _prior(cfg: Config) -> Prior:
    return cached_prior(cfg.prior, cfg.model_path)


def _use_threads(cfg: Config) -> None:
    """Every stage runs on `recon.threads` CPU threads (0: as started), not only the engine's fit."""
    if cfg.recon.threads > 0:
        torch.set_num_threads(cfg.recon.threads)


# --- mv-recon ------------------------------------------------------------------------------------

def views(ctx: StageContext) -> None:
    cfg: Config = ctx.config
    _use_threads(cfg)
    prior = _prior(cfg)
    cams = pass_cameras(cfg.views.passes, cfg.views.elevations, RADIUS, FOV_Y_DEG, prior.image_size)
    rgba = generate_views(prior, ctx.inputs["prompt"], cams, cfg.views.passes, observed=None,
                          steps=cfg.views.steps, guidance=cfg.views.guidance, generator=ctx.generator)
    save_views(ctx, rgba, cams, FOV_Y_DEG)
    ctx.log(f"{len(cams)} views at {prior.image_size}x{prior.image_size} in passes of {cfg.views.passes}")


def _fit_trainer(ctx: StageContext, seed: int) -> ReconTrainer:
    images, cams = load_views(ctx.path)
    return ReconTrainer(ctx.config.recon, images, cams, seed=seed)


def fit(ctx: StageContext) -> None:
    fit_views(ctx, _fit_trainer)


def _fitted(ctx: StageContext) -> tuple[NerfField, VolumeRenderer]:
    return fitted_model(ctx, _fit_trainer)


# --- sds / vsd -----------------------------------------------------------------------------------

class DistillField(NerfField):
    """A field for optimisation from scratch: a density blob at the centre (so the first renders
    show an object for the prior to shape, not empty space) and coarse-to-fine hash levels (the
    finer levels join after `coarse_steps`, so early, noisy gradients cannot carve fine noise)."""

    def __init__(self, cfg: FieldConfig, aabb: Tensor, d: DistillConfig, generator: torch.Generator | None = None):
        super().__init__(cfg, aabb, generator)
        self.blob_density, self.blob_radius, self.bias = d.blob_density, d.blob_radius, d.density_bias
        self.register_buffer("level_mask", torch.ones(self.encoding.out_dim), persistent=False)

    def set_levels(self, levels: int | None) -> None:
        """Keep the first `levels` hash levels (None: all); other encodings ignore it."""
        self.level_mask.fill_(1.0)
        if levels is not None and self.cfg.encoding.kind == "hash":
            self.level_mask[levels * self.cfg.encoding.hash.features:] = 0.0

    def encode(self, u: Tensor) -> Tensor:
        return self.encoding(u) * self.level_mask

    def density_offset(self, x: Tensor) -> Tensor:
        return seed_blob(x, self.blob_density, self.blob_radius, self.bias)


def seed_blob(x: Tensor, density: float, radius: float, bias: float) -> Tensor:
    """Pre-activation density of a Gaussian blob at the centre over an empty background, from
    world points (N, 3+) (a time column, if any, is ignored)."""
    return bias + density * torch.exp(-x[:, :3].square().sum(-1) / (2 * radius**2))


def _distill_renderer(cfg: Config) -> VolumeRenderer:
    return VolumeRenderer(dataclasses.replace(cfg.recon.render, step_size=cfg.distill.step_size))


class Distiller:
    """The field, renderer, optimiser (and VSD's LoRA copy) of one distillation run; every random
    draw comes from `generator`, so `state_dict()` (plus the runner's RNG states) resumes exactly."""

    def __init__(self, cfg: Config, prior: Prior, prompt: str, generator: torch.Generator):
        d = cfg.distill
        self.cfg, self.prior, self.prompt, self.generator = cfg, prior, prompt, generator
        self.field = self.build_field(cfg, generator)
        self.renderer = _distill_renderer(cfg)
        self.model = nn.ModuleDict({"field": self.field, "renderer": self.renderer})
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=d.lr, betas=(0.9, 0.99), eps=1e-15)
        self.vsd = None
        if cfg.method == "vsd":
            network = prior.network if prior.network is not None else prior.denoiser.net
            if not isinstance(network, nn.Module):
                raise UserError(f"prior '{cfg.prior}' offers no network module for VSD's LoRA copy; use --method sds")
            self.vsd = VSD(prior.denoiser, network, call=prior.network_call, rank=d.lora_rank, lr=d.lora_lr,
                           generator=generator)
        self.step_count = 0

    @staticmethod
    def build_field(cfg, generator: torch.Generator | None = None) -> NerfField:
        return DistillField(cfg.recon.field, torch.tensor(cfg.recon.render.aabb), cfg.distill, generator)

    def cameras(self, size: int) -> Cameras:
        """One set of the prior's views: evenly spaced azimuths from a random offset, one random
        elevation. (Single-view priors add DreamFusion's view words to the prompt themselves.)"""
        return random_orbit_set(self.prior.views_per_set, self.cfg.distill.elevations, RADIUS, FOV_Y_DEG, size,
                                self.generator)

    def render(self, cams: Cameras, field=None) -> Tensor:
        """Differentiable RGBA (V, 4, S, S) of `field` (default: the field) for the prior, upsampled
        to its image size."""
        return render_for_prior(self.renderer, field or self.field, cams, self.cfg.distill.background,
                                self.generator, self.prior.image_size)

    def step(self) -> float:
        d, total = self.cfg.distill, self.cfg.distill.steps
        self.field.set_levels(d.coarse_levels if self.step_count < d.coarse_steps else None)
        cams = self.cameras(d.render_size)
        (cond, uncond), rgba = self.condition_and_render(cams)
        latents = self.prior.encode(rgba)
        t_range = anneal_t_range(self.step_count, total, tuple(d.t_start), tuple(d.t_end), d.anneal)
        group = self.prior.views_per_set
        if self.vsd is None:
            guided = self.prior.guided(cond, uncond, d.guidance)
            loss, _ = sds_loss(guided, latents, self.generator, cond, t_range=t_range, weighting=d.weighting, group=group)
        else:
            self.vsd.prior = self.prior.guided(cond, uncond, d.vsd_guidance)  # cameras change every step
            loss, _ = self.vsd.loss(latents, self.generator, cond, t_range=t_range, weighting=d.weighting, group=group)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.vsd is not None:
            self.vsd.update_lora(latents, self.generator, cond, group=group)
        self.step_count += 1
        self.update_occupancy()
        return float(loss.detach())

    def condition_and_render(self, cams: Cameras) -> tuple[tuple, Tensor]:
        """The prior's (cond, uncond) for this step's cameras and the differentiable renders there."""
        return self.prior.condition(self.prompt, cams), self.render(cams)

    def update_occupancy(self) -> None:
        self.renderer.update_occupancy(self.field, self.step_count, self.generator)

    def finish(self) -> None:
        self.field.set_levels(None)

    def state_dict(self) -> dict:
        state = {"step": self.step_count, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "rng": self.generator.get_state()}
        if self.vsd is not None:
            state["lora"] = [p.detach().clone() for p in self.vsd.lora_params]
            state["lora_optimizer"] = self.vsd.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"])
        if self.vsd is not None:
            with torch.no_grad():
                for p, saved in zip(self.vsd.lora_params, state["lora"]):
                    p.copy_(saved)
            self.vsd.optimizer.load_state_dict(state["lora_optimizer"])


def distill(ctx: StageContext, distiller_cls: type[Distiller] = Distiller) -> None:
    cfg: Config = ctx.config
    _use_threads(cfg)
    distiller = distiller_cls(cfg, _prior(cfg), ctx.inputs["prompt"], ctx.generator)
    total = cfg.distill.steps
    for step in ctx.steps(total, every=cfg.distill.checkpoint_every, state=distiller.state_dict,
                          restore=distiller.load_state_dict):
        loss = distiller.step()
        if (step + 1) % cfg.distill.log_every == 0 or step + 1 == total:
            ctx.event(step + 1, total, loss=loss)
    distiller.finish()
    ctx.add_artifact(ctx.run.checkpoint_path("distill"), "checkpoint")
    ctx.shared["model"] = (distiller.field, distiller.renderer)


def distilled_model(ctx: StageContext, distiller_cls: type[Distiller] = Distiller) -> tuple[NerfField, VolumeRenderer]:
    """The distill stage's field and renderer, re-loaded from its checkpoint (for a resumed export);
    `ctx.config` is any config a `distiller_cls` takes."""
    cfg: Config = ctx.config
    field = distiller_cls.build_field(cfg)
    renderer = _distill_renderer(cfg)
    nn.ModuleDict({"field": field, "renderer": renderer}).load_state_dict(ctx.read_checkpoint("distill").state["model"])
    return field, renderer


# --- export --------------------------------------------------------------------------------------

def export(ctx: StageContext) -> None:
    cfg: Config = ctx.config
    _use_threads(cfg)
    if "model" not in ctx.shared:
        ctx.shared["model"] = _fitted(ctx) if cfg.method == "mv-recon" else distilled_model(ctx)
    field, renderer = ctx.shared["model"]
    export_field(ctx, field, cfg.export)
    save_renders(ctx, field, renderer, eval_cameras(cfg.render_size))


# --- estimates -----------------------------------------------------------------------------------

def _estimate_views(job: Job) -> float:
    views: ViewsConfig = job.config.views
    return estimate_views_seconds(sum(views.passes), views.steps)


def estimate_distill_seconds(job: Job) -> float:
    """The distill stage of a job whose config has `distill` and `method` (sds or vsd)."""
    cfg: Config = job.config
    d = cfg.distill
    views = 4  # the bundled prior's set size; estimates read no files, so the prior is not loaded
    per_step = views * (d.render_size**2 * SECONDS_PER_DISTILL_PIXEL
                        + SECONDS_PER_DISTILL_VIEW * (1 + (VSD_LORA_FACTOR if cfg.method == "vsd" else 0)))
    return PRIOR_LOAD_SECONDS + d.steps * per_step


def _estimate_export(job: Job) -> float:
    return estimate_object_export_seconds(job.config.export, job.config.render_size)


def build_job(config: Config, inputs: dict, seed: int) -> Job:
    if config.method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got '{config.method}'")
    if not str(inputs.get("prompt", "")).strip():
        raise UserError("the prompt is empty; describe the object, e.g. \"a red sphere\"")
    if config.method == "mv-recon":
        stages = [Stage("views", views, _estimate_views),
                  Stage("fit", fit, lambda job: estimate_fit_seconds(job.config.recon))]
    else:
        stages = [Stage("distill", distill, estimate_distill_seconds)]
    return Job(kind=KIND, config=config, inputs=inputs, seed=seed, slug=slugify(inputs["prompt"], 40, "prompt"),
               stages=stages + [Stage("export", export, _estimate_export)])

