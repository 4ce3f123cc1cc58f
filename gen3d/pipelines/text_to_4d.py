"""`text-to-4d`: a prompt describing a moving object -> a dynamic 3D scene.

The 4D prior (`shapeworld-4d`) generates a grid of views over cameras x clip times (CAT4D style:
the first frame from the text, later frames conditioned on anchor views of the first), and the
reconstruction engine fits a space-time field (K-planes style, `gen3d.fields.spacetime`) to all of
them at once, with the generated alpha as a mask loss. Stages: views -> fit -> export.

`--method sds` instead distils a space-time field through the 4D prior (4D-fy / DreamGaussian4D
style): every step renders one set of the prior's cameras at a random clip time and follows the
guided score of the prior conditioned on that time. Stages: distill -> export.

Export writes one GLB per frame (`frames/NNN.glb`, role mesh, with its frame index and time), a
turntable while the animation plays (MP4/GIF), and renders of the field at the ShapeWorld
evaluation orbit for every frame (`renders/TT-CC.png`), which `gen3d bench 4d` scores. The field's
memory does not grow with the number of frames (its time axis has a fixed resolution).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import trimesh

from gen3d.cameras import Cameras, orbit, turntable
from gen3d.data.images import save_png
from gen3d.device import DeviceSettings
from gen3d.errors import UserError
from gen3d.export import write_gif, write_mesh, write_video
from gen3d.export.video import fit_radius
from gen3d.fields.spacetime import SpacetimeField, field_megabytes
from gen3d.io import atomic_output, slugify
from gen3d.models.prior import Observed
from gen3d.pipelines import text_to_3d
from gen3d.pipelines.stages.costs import SECONDS_PER_TURNTABLE_PIXEL, estimate_fit_seconds, estimate_views_seconds
from gen3d.pipelines.stages.distill import DistillConfig, Distiller, seed_blob
from gen3d.pipelines.stages.export import ExportConfig, field_asset, object_export_config, render_images
from gen3d.pipelines.stages.fit import FitConfig, TrainerFactory, fit_views, object_recon_config
from gen3d.pipelines.stages.plan import estimate_distill
from gen3d.pipelines.stages.reexport import export_clip_meshes
from gen3d.pipelines.stages.reload import stage_model
from gen3d.pipelines.stages.resources import job_prior, use_threads
from gen3d.pipelines.stages.views import load_views
from gen3d.recon import ReconConfig, ReconTrainer
from gen3d.render.mesh import ShadingConfig, render_mesh
from gen3d.runs import Job, RunFolder, Stage, StageContext
from gen3d.shapeworld.scenes import FOV_Y_DEG, RADIUS, eval_cameras

KIND = "text-to-4d"
# measured on the 2-core machine (one thread, a default 8-frame run: views 23 s, fit 71 s, export 24 s)
ANCHOR_SLOWDOWN = 1.0  # each generated view shares its set with 3 anchor views
SECONDS_PER_FRAME_EXPORT = 1.5  # marching cubes, cleaning and the GLB of one frame
SECONDS_PER_EVAL_PIXEL = 2.5e-5  # renders of the space-time field at the evaluation orbit
DISTILL_4D_FACTOR = 1.2  # a space-time field step relative to text-to-3d's static one


@dataclass
class GridConfig:
    frames: int = 8  # clip times 0, 1/(F-1), ..., 1
    cameras: int = 6  # per frame (the 4D prior denoises up to 6 jointly)
    elevations: list[float] = dataclasses.field(default_factory=lambda: [10.0, 30.0])  # cycled over cameras
    steps: int = 20
    guidance: float | None = None  # None: the prior's default


def _fit_recon() -> ReconConfig:
    """The single-object engine with a K-planes field (tri-plane space x space-time planes)."""
    recon = object_recon_config()
    recon.steps, recon.batch_rays, recon.threads = 400, 2048, 1
    recon.spacetime.enabled = True
    recon.field.encoding.kind = "triplane"
    return recon


def _export() -> ExportConfig:
    """One GLB per frame (no point cloud) and a 32-frame turntable while the clip plays; colours
    from the field (a frame's time has a few views at most)."""
    return dataclasses.replace(object_export_config(), formats=["glb"], target_faces=10_000, turntable_frames=32,
                               texture=False, colors="field")  # a GLB per frame: vertex colours keep 32 frames quick


Method = Literal["mv-recon", "sds"]
METHODS = ("mv-recon", "sds")


def _distill() -> DistillConfig:
    return DistillConfig(steps=1500, render_size=24)


@dataclass
class Config(DeviceSettings):
    method: Method = "mv-recon"
    prior: str = "shapeworld-4d"
    model_path: str | None = None  # a 4D prior folder instead of the bundled weights
    render_size: int = 64  # pixels of the renders at the evaluation orbit
    eval_frames: int = 8  # frames rendered at the evaluation orbit (evenly spaced clip times)
    grid: GridConfig = dataclasses.field(default_factory=GridConfig)
    recon: ReconConfig = dataclasses.field(default_factory=_fit_recon)
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    distill: DistillConfig = dataclasses.field(default_factory=_distill)  # --method sds
    export: ExportConfig = dataclasses.field(default_factory=_export)


def clip_times(frames: int) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, frames) if frames > 1 else torch.zeros(1)


def grid_cameras(g: GridConfig, size: int) -> Cameras:
    """The per-frame cameras: evenly spaced azimuths, elevations cycling through `g.elevations`."""
    azimuths = [360.0 * k / g.cameras for k in range(g.cameras)]
    return orbit([g.elevations[k % len(g.elevations)] for k in range(g.cameras)], azimuths, RADIUS, FOV_Y_DEG, size, size)


# --- views -----------------------------------------------------------------------------------------

def generate_grid(ctx: StageContext, observed: Observed | None) -> None:
    """Sample the camera x time grid and save it: `views/TT-CC.png`, `views.png` (rows = times) and
    `views.json` (cameras, times)."""
    cfg: Config = ctx.config
    use_threads(cfg)
    prior = job_prior(cfg)
    if not hasattr(prior, "sample_grid"):
        raise UserError(f"prior '{cfg.prior}' has no notion of time; 4D jobs need a 4D prior such as shapeworld-4d")
    cams = grid_cameras(cfg.grid, prior.image_size)
    times = clip_times(cfg.grid.frames)
    grid = prior.sample_grid(ctx.inputs.get("prompt"), cams, times, observed, steps=cfg.grid.steps,
                             guidance=cfg.grid.guidance, generator=ctx.generator)
    save_grid(ctx, grid, cams, times)
    ctx.log(f"{len(times)} frames x {len(cams)} cameras at {prior.image_size}x{prior.image_size}")


def save_grid(ctx: StageContext, grid: torch.Tensor, cams: Cameras, times: torch.Tensor) -> None:
    images = grid.permute(0, 1, 3, 4, 2)  # (T, C, H, W, 4)
    names = []
    for ti, row in enumerate(images):
        for ci, image in enumerate(row):
            path = ctx.path / "views" / f"{ti:02d}-{ci:02d}.png"
            save_png(image, path)
            ctx.add_artifact(path, "views", frame=ti, view=ci, time=round(float(times[ti]), 6))
            names.append(path.relative_to(ctx.path).as_posix())
    over_white = images[..., :3] * images[..., 3:] + (1 - images[..., 3:])
    t, c, h, w = over_white.shape[:4]
    save_png(over_white.permute(0, 2, 1, 3, 4).reshape(t * h, c * w, 3), ctx.path / "views.png")
    ctx.add_artifact(ctx.path / "views.png", "views", grid=True)
    record = {"fov_y_deg": FOV_Y_DEG, "size": [cams.width, cams.height], "c2w": cams.c2w.repeat(len(times), 1, 1).tolist(),
              "times": times.repeat_interleave(len(cams)).tolist(), "views": names}
    with atomic_output(ctx.path / "views.json") as tmp:
        tmp.write_text(json.dumps(record))
    ctx.add_artifact(ctx.path / "views.json", "views")


def load_grid(run_path: Path) -> tuple[torch.Tensor, Cameras, torch.Tensor]:
    """The saved grid flattened time-major: RGBA (T*C, H, W, 4), cameras (T*C) and times (T*C,)."""
    images, cams = load_views(run_path)
    return images, cams, torch.tensor(json.loads((run_path / "views.json").read_text())["times"])


def views(ctx: StageContext) -> None:
    generate_grid(ctx, None)


# --- fit -------------------------------------------------------------------------------------------

def _trainer(ctx: StageContext, seed: int) -> ReconTrainer:
    images, cams, times = load_grid(ctx.path)
    return ReconTrainer(ctx.config.recon, images, cams, seed=seed, times=times)


def fit(ctx: StageContext, make_trainer: TrainerFactory = _trainer) -> None:
    use_threads(ctx.config)
    fit_views(ctx, make_trainer)


# --- sds -------------------------------------------------------------------------------------------

class SpacetimeDistillField(SpacetimeField):
    """A space-time field seeded with text-to-3d's density blob, so the first renders at every time
    show an object for the prior to shape."""

    def __init__(self, cfg: Config, generator: torch.Generator | None = None):
        super().__init__(cfg.recon.field, cfg.recon.spacetime, torch.tensor(cfg.recon.render.aabb), generator)
        self.blob = (cfg.distill.blob_density, cfg.distill.blob_radius, cfg.distill.density_bias)

    def density_offset(self, x: torch.Tensor) -> torch.Tensor:
        return seed_blob(x, *self.blob)

    def set_levels(self, levels: int | None) -> None:
        """Tri-plane features have no coarse-to-fine levels to mask."""


class Distiller4D(Distiller):
    """text-to-3d's distiller over a space-time field: each step one random clip time for the set."""

    @staticmethod
    def build_field(cfg: Config, generator: torch.Generator | None = None) -> SpacetimeDistillField:
        return SpacetimeDistillField(cfg, generator)

    def condition_and_render(self, cams: Cameras) -> tuple[tuple, torch.Tensor]:
        t = torch.rand((), generator=self.generator)
        cond = self.prior.condition(self.prompt, cams, None, t.expand(len(cams)))
        return cond, self.render(cams, self.field.at_time(t))

    def update_occupancy(self) -> None:
        self.renderer.update_occupancy(self.field, self.step_count, self.generator, over_time=True)


def distill(ctx: StageContext) -> None:
    text_to_3d.distill(ctx, Distiller4D)


# --- export ----------------------------------------------------------------------------------------

def playing_turntable(meshes: list[trimesh.Trimesh], n_frames: int, size: int, elevation: float) -> np.ndarray:
    """(n_frames, size, size, 3) uint8: the camera circles once while the animation plays once."""
    radius = max(fit_radius(m, FOV_Y_DEG) for m in meshes)
    cams = turntable(n_frames, elevation, radius, FOV_Y_DEG, size, size)
    frames = [render_mesh(meshes[k * len(meshes) // n_frames], cams[[k]], shading=ShadingConfig(), ss=2).composited()
              for k in range(n_frames)]
    return np.round(torch.cat(frames).numpy() * 255).astype(np.uint8)


def export(ctx: StageContext, make_trainer: TrainerFactory = _trainer) -> None:
    cfg: Config = ctx.config
    use_threads(cfg)
    field, renderer = stage_model(ctx, make_trainer, Distiller4D)
    times = clip_times(cfg.grid.frames)
    meshes = []
    for k, t in enumerate(times.tolist()):
        try:
            mesh = field_asset(field.at_time(t), cfg.export, cfg.export.resolution).primary
        except UserError as exc:  # an empty frame: nothing to mesh, not bad input
            ctx.log(f"frame {k}: no mesh ({exc})")
            continue
        path = write_mesh(mesh, ctx.path / "frames" / f"{k:03d}.glb")
        ctx.add_artifact(path, "mesh", format="glb", up="y", frame=k, time=round(t, 6))
        meshes.append(mesh)
        ctx.event(k + 1, len(times), message=f"frame {k} meshed")
    if not meshes:
        raise UserError(f"no frame has a surface at config key 'export.threshold' = {cfg.export.threshold}; "
                        "no mesh exported (run again with a lower one or more training steps)")
    frames = playing_turntable(meshes, cfg.export.turntable_frames, cfg.export.turntable_size,
                               cfg.export.turntable_elevation)
    if cfg.export.video:
        ctx.add_artifact(write_video(frames, ctx.path / "turntable.mp4", fps=12), "turntable")
    if cfg.export.gif:
        ctx.add_artifact(write_gif(frames, ctx.path / "turntable.gif"), "turntable")
    cams = eval_cameras(cfg.render_size)
    for k, t in enumerate(clip_times(cfg.eval_frames).tolist()):
        out = render_images(field.at_time(t), renderer, cams)
        for ci, (rgb, opacity) in enumerate(zip(out["rgb"], out["opacity"])):
            path = ctx.path / "renders" / f"{k:02d}-{ci:02d}.png"
            save_png(torch.cat([rgb, opacity[..., None]], -1), path)
            ctx.add_artifact(path, "render", frame=k, view=ci, time=round(t, 6))
    ctx.set_metrics(frames=len(times), meshed_frames=len(meshes), field_mb=round(field_megabytes(field), 3))


# --- estimates and job -----------------------------------------------------------------------------

def _estimate_views(job: Job) -> float:
    g = job.config.grid
    return estimate_views_seconds(g.frames * g.cameras, g.steps) * ANCHOR_SLOWDOWN


def _estimate_fit(job: Job) -> float:
    return estimate_fit_seconds(job.config.recon)


def _estimate_export(job: Job) -> float:
    cfg: Config = job.config
    return (cfg.grid.frames * SECONDS_PER_FRAME_EXPORT + cfg.eval_frames * 8 * cfg.render_size**2 * SECONDS_PER_EVAL_PIXEL
            + cfg.export.turntable_frames * cfg.export.turntable_size**2 * SECONDS_PER_TURNTABLE_PIXEL)


def check_grid(cfg: Config) -> None:
    if cfg.grid.frames < 2:
        raise UserError(f"config key 'grid.frames' must be at least 2, got {cfg.grid.frames}")
    if not 1 <= cfg.grid.cameras <= 6:
        raise UserError(f"config key 'grid.cameras' must be in [1, 6], got {cfg.grid.cameras}")
    if not cfg.recon.spacetime.enabled:
        raise UserError("config key 'recon.spacetime.enabled' must be true for a 4D job")


def _estimate_distill(job: Job) -> float:
    return estimate_distill(job) * DISTILL_4D_FACTOR


def stages(cfg: Config, views_stage: Callable[[StageContext], None], make_trainer: TrainerFactory = _trainer) -> list[Stage]:
    """views -> fit -> export (mv-recon) or distill -> export (sds); image-to-4d brings its own views
    stage and trainer (the photo joins the fit)."""
    if cfg.method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got '{cfg.method}'")
    if cfg.method == "mv-recon":
        first = [Stage("views", views_stage, _estimate_views),
                 Stage("fit", functools.partial(fit, make_trainer=make_trainer), _estimate_fit)]
    else:
        first = [Stage("distill", distill, _estimate_distill)]
    return first + [Stage("export", functools.partial(export, make_trainer=make_trainer), _estimate_export)]


def build_job(config: Config, inputs: dict, seed: int) -> Job:
    check_grid(config)
    if not str(inputs.get("prompt", "")).strip():
        raise UserError("the prompt is empty; describe a moving object, e.g. \"a red sphere bouncing\"")
    return Job(kind=KIND, config=config, inputs=inputs, seed=seed, slug=slugify(inputs["prompt"], 40, "prompt"),
               stages=stages(config, views))


def export_mesh(run: RunFolder, fmt: str, resolution: int | None, make_trainer: TrainerFactory = _trainer) -> Path:
    """`gen3d export`: one mesh per clip frame again from the run's checkpoint; image-to-4d passes
    its trainer."""
    frames = int(run.manifest["config"]["grid"]["frames"])
    return export_clip_meshes(run, make_trainer, Distiller4D, clip_times(frames).tolist(), fmt, resolution)
