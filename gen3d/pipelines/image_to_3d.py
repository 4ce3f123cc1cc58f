"""`image-to-3d`: one photo of an object -> a 3D object.

nv-recon (novel-view reconstruction): the photo, cut out and framed like the prior's training
renders, is an observed view at azimuth 0 and the given elevation; the multi-view prior generates
views around the object conditioned on it (later passes also on earlier outputs), and the engine
fits a field to the photo plus the generated views (the photo weighted higher), with alpha as a
mask loss. Stages: views -> fit -> export, with text-to-3D's run folder, resume and artifacts.

sds (Zero-1-to-3 / Magic123 style): text-to-3D's distiller with the prior conditioned on the photo
at every step, alternating with a reference step that fits the field's render at the photo's
camera to the photo (RGB and mask). Stages: distill -> export.

`views/000.png` is always the user's view; generated views follow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from gen3d.cameras import Cameras, flat_rays, orbit
from gen3d.data.foreground import ForegroundConfig, prepare_image
from gen3d.data.images import save_png
from gen3d.device import DeviceSettings
from gen3d.errors import UserError
from gen3d.io import slugify
from gen3d.models.prior import Observed
from gen3d.pipelines.stages.distill import DistillConfig, Distiller, run_distiller
from gen3d.pipelines.stages.export import ExportConfig, export_object, object_export_config
from gen3d.pipelines.stages.fit import FitConfig, fit_views, object_recon_config
from gen3d.pipelines.stages.plan import object_stages
from gen3d.pipelines.stages.reexport import export_object_mesh
from gen3d.pipelines.stages.resources import job_prior
from gen3d.pipelines.stages.views import ViewsConfig, generate_views, load_views, save_views, view_cameras
from gen3d.recon import ReconConfig, ReconTrainer
from gen3d.runs import Job, RunFolder, StageContext
from gen3d.shapeworld.scenes import FOV_Y_DEG, RADIUS

KIND = "image-to-3d"
Method = Literal["nv-recon", "sds"]
METHODS = ("nv-recon", "sds")
CHECK_SIZE = 16  # resolution of the up-front input check (the run prepares the photo again at the prior's)


def _views() -> ViewsConfig:
    """Two passes of 4: the second, rotated 45 degrees, sees the photo and first-pass views."""
    return ViewsConfig(passes=[4, 4], elevations=[15.0, 30.0], steps=20)


@dataclass
class ReferenceLossConfig:
    """sds: weights of the photo's own losses in the reference step."""

    rgb: float = 1.0
    mask: float = 1.0


@dataclass
class Config(DeviceSettings):
    method: Method = "nv-recon"
    prior: str = "shapeworld-mv"
    model_path: str | None = None
    elevation: float = 15.0  # degrees above the object's equator the photo was taken from
    input_weight: float = 3.0  # the photo's loss weight relative to one generated view
    foreground: ForegroundConfig = dataclasses.field(default_factory=ForegroundConfig)
    render_size: int = 64  # pixels of the renders at the evaluation orbit
    reference: ReferenceLossConfig = dataclasses.field(default_factory=ReferenceLossConfig)
    views: ViewsConfig = dataclasses.field(default_factory=_views)
    recon: ReconConfig = dataclasses.field(default_factory=object_recon_config)
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    export: ExportConfig = dataclasses.field(default_factory=object_export_config)


def input_camera(elevation: float, size: int) -> Cameras:
    """The photo's camera: azimuth 0 (+x), the prior's radius and field of view."""
    return orbit([elevation], [0.0], RADIUS, FOV_Y_DEG, size, size)


def observed_view(cfg: Config, inputs: dict, size: int) -> Observed:
    """The user's photo as the prior's observed view (validated; UserError names the file)."""
    rgba = prepare_image(Path(inputs["image"]), inputs.get("mask") and Path(inputs["mask"]), size, cfg.foreground)
    return Observed(rgba[None], input_camera(cfg.elevation, size))


# --- stages ----------------------------------------------------------------------------------

def views(ctx: StageContext) -> None:
    cfg: Config = ctx.config
    prior = job_prior(cfg)
    observed = observed_view(cfg, ctx.inputs, prior.output_size)
    save_png(observed.images[0].permute(1, 2, 0), ctx.path / "input.png")
    ctx.add_artifact(ctx.path / "input.png", "views", input=True)
    cams = view_cameras(cfg.views, prior.output_size)
    rgba = generate_views(prior, None, cams, cfg.views.passes, observed=observed, steps=cfg.views.steps,
                          guidance=cfg.views.guidance, generator=ctx.generator)
    save_views(ctx, torch.cat([observed.images, rgba]), Cameras.cat([observed.cameras, cams]), FOV_Y_DEG)
    ctx.log(f"{len(cams)} views generated around the photo (elevation {cfg.elevation} deg) "
            f"in passes of {cfg.views.passes}")


def fit_trainer(ctx: StageContext, seed: int) -> ReconTrainer:
    cfg: Config = ctx.config
    images, cams = load_views(ctx.path)
    weights = torch.ones(len(cams))
    weights[0] = cfg.input_weight
    return ReconTrainer(cfg.recon, images, cams, seed=seed, view_weights=weights)


def fit(ctx: StageContext) -> None:
    fit_views(ctx, fit_trainer)


def export(ctx: StageContext) -> None:
    export_object(ctx, fit_trainer)


# --- sds --------------------------------------------------------------------------------------

class ObservedPrior:
    """A prior whose every conditioning includes the photo, so score distillation sees it."""

    def __init__(self, prior, observed: Observed):
        self._prior, self._observed = prior, observed

    def __getattr__(self, name):
        return getattr(self._prior, name)

    def condition(self, prompt, cameras, observed=None):
        return self._prior.condition(prompt, cameras, self._observed)


class ReferenceStep:
    """One optimiser step of the distiller's field towards the photo at its camera (premultiplied
    RGB over black and coverage), at the distiller's render size."""

    def __init__(self, distiller: Distiller, observed: Observed, weights: ReferenceLossConfig):
        size = distiller.cfg.distill.render_size
        self.distiller, self.weights = distiller, weights
        self.rays = flat_rays(observed.cameras.resized(size, size))
        small = torch.nn.functional.interpolate(observed.images, size=(size, size), mode="area")[0]
        alpha = small[3:].permute(1, 2, 0).reshape(-1, 1)
        self.premult, self.alpha = small[:3].permute(1, 2, 0).reshape(-1, 3) * alpha, alpha[:, 0]

    def __call__(self) -> float:
        d = self.distiller
        out = d.renderer.render_rays(d.field, *self.rays, torch.zeros(3), generator=d.generator)
        loss = (self.weights.rgb * (out["rgb"] - self.premult).square().mean()
                + self.weights.mask * (out["opacity"] - self.alpha).square().mean())
        d.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        d.optimizer.step()
        return float(loss.detach())


def distill(ctx: StageContext) -> None:
    cfg: Config = ctx.config
    prior = job_prior(cfg)
    observed = observed_view(cfg, ctx.inputs, prior.image_size)
    distiller = Distiller(cfg, ObservedPrior(prior, observed), "", ctx.generator)
    reference = ReferenceStep(distiller, observed, cfg.reference)
    run_distiller(ctx, distiller, lambda: {"reference_loss": reference()})


def build_job(config: Config, inputs: dict, seed: int) -> Job:
    if config.method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got '{config.method}'")
    observed_view(config, inputs, CHECK_SIZE)  # bad files fail here, before a run folder exists
    return Job(kind=KIND, config=config, inputs=inputs, seed=seed, slug=slugify(Path(inputs["image"]).stem, 40, "image"),
               stages=object_stages(config.method, views, fit, distill, export))


def export_mesh(run: RunFolder, fmt: str, resolution: int | None) -> Path:
    """`gen3d export`: the run's mesh again from its checkpoint (e.g. a finer grid, another format)."""
    return export_object_mesh(run, fit_trainer, fmt, resolution)
