"""The distill stage: a field optimised from scratch by score distillation (SDS, or VSD with a LoRA
copy of the prior) through the prior's guided score, one set of the prior's views per step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen3d.cameras import Cameras, flat_rays, random_orbit_set
from gen3d.config import ranged
from gen3d.diffusion.distill import VSD, anneal_t_range, sds_loss
from gen3d.errors import UserError
from gen3d.fields.nerf import FieldConfig, NerfField
from gen3d.models.prior import Prior
from gen3d.render.volume import VolumeRenderer
from gen3d.runs import StageContext
from gen3d.shapeworld.scenes import ELEVATION_RANGE_DEG, FOV_Y_DEG, RADIUS

PriorBackground = Literal["alpha", "white", "random"]
DISTILL_METHODS = ("sds", "vsd")  # the methods whose model comes from the distill stage


@dataclass
class DistillConfig:
    steps: int = ranged(1500, low=0)
    lr: float = ranged(1e-2, low=0.0)
    render_size: int = ranged(24, low=1)  # rendered pixels per side, upsampled to the prior's image size
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
    checkpoint_every: int = ranged(250, low=1)
    log_every: int = ranged(25, low=1)


def render_for_prior(renderer: VolumeRenderer, field, cams: Cameras, background: PriorBackground,
                     generator: torch.Generator, size: int) -> Tensor:
    """Differentiable RGBA (V, 4, size, size) of `field` at square `cams`, upsampled to the prior's
    image size. background alpha: straight colour and coverage, so the prior's own compositing sees
    premult + (1 - a); white or random: composited onto that colour, alpha 1."""
    origins, dirs = flat_rays(cams)
    out = renderer.render_rays(field, origins, dirs, torch.zeros(3), generator=generator)
    n, s = len(cams), cams.height
    premult = out["rgb"].reshape(n, s, s, 3).permute(0, 3, 1, 2)
    alpha = out["opacity"].reshape(n, 1, s, s)
    if background == "alpha":
        rgba = torch.cat([premult / alpha.clamp_min(1e-4), alpha], 1)
    else:
        color = torch.ones(3) if background == "white" else torch.rand(3, generator=generator)
        rgba = torch.cat([premult + color[:, None, None] * (1 - alpha), torch.ones_like(alpha)], 1)
    return F.interpolate(rgba, size=(size, size), mode="bilinear", align_corners=False)


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


def distill_renderer(cfg) -> VolumeRenderer:
    """The fit's renderer with the distillation's ray-marching step."""
    return VolumeRenderer(dataclasses.replace(cfg.recon.render, step_size=cfg.distill.step_size))


class Distiller:
    """The field, renderer, optimiser (and VSD's LoRA copy) of one distillation run; every random
    draw comes from `generator`, so `state_dict()` (plus the runner's RNG states) resumes exactly."""

    def __init__(self, cfg, prior: Prior, prompt: str, generator: torch.Generator):
        d = cfg.distill
        self.cfg, self.prior, self.prompt, self.generator = cfg, prior, prompt, generator
        self.field = self.build_field(cfg, generator)
        self.renderer = distill_renderer(cfg)
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


def run_distiller(ctx: StageContext, distiller: Distiller, extra_step: Callable[[], dict] | None = None) -> None:
    """The distill stage's resumable loop: `distill.steps` steps of `distiller` (each followed by
    `extra_step`, whose stats join the logged loss), then its checkpoint recorded and its model
    left in `ctx.shared` for the export stage."""
    cfg = ctx.config.distill
    for step in ctx.steps(cfg.steps, every=cfg.checkpoint_every, state=distiller.state_dict,
                          restore=distiller.load_state_dict):
        loss = distiller.step()
        stats = extra_step() if extra_step is not None else {}
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            ctx.event(step + 1, cfg.steps, loss=loss, **stats)
    distiller.finish()
    ctx.add_artifact(ctx.run.checkpoint_path("distill"), "checkpoint")
    ctx.shared["model"] = (distiller.field, distiller.renderer)
