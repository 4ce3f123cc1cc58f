"""Pieces several pipelines share: the loaded prior and the stage-cost constants behind estimates,
the engine and export configs for single objects, PNG saving, generated views (sampling in passes,
saving, reading back), differentiable renders for score distillation, fitting the engine on
generated views, and the export of a field (mesh, point cloud, turntable, renders at the
evaluation orbit).

Generated views are always read back from their PNGs before fitting, so a fresh run and a resumed
one fit exactly the same 8-bit images.
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
import torch.nn.functional as F
import trimesh
from PIL import Image
from torch import Tensor

from gen3d.cameras import Cameras, from_fov, generate_rays, orbit
from gen3d.errors import UserError
from gen3d.export import (
    clean_mesh,
    extract_mesh,
    render_turntable,
    write_gif,
    write_mesh,
    write_pointcloud_ply,
    write_video,
)
from gen3d.fields.nerf import NerfField
from gen3d.models.prior import Observed, Prior, load_prior
from gen3d.recon import ReconConfig, ReconTrainer
from gen3d.render.volume import VolumeRenderer
from gen3d.io import atomic_output
from gen3d.runs import StageContext

MeshFormat = Literal["glb", "ply", "obj"]

# CPU costs on 2 cores behind export estimates (marching cubes + cleaning, mesh turntable frames)
SECONDS_PER_GRID_POINT = 3e-7
SECONDS_PER_TURNTABLE_PIXEL = 6e-6

# CPU costs behind the estimates of jobs with the bundled prior, measured with text-to-3d's default
# config on the 2-core dev machine while other jobs shared it (one torch thread: faster there than
# two); re-measure when the prior or the engine changes.
PRIOR_LOAD_SECONDS = 3.0
SECONDS_PER_VIEW_STEP = 0.025  # one sampler step for one generated view (CFG: two network rows)
SECONDS_PER_FIT_RAY = 1.2e-4
SECONDS_PER_RENDER_PIXEL = 1.2e-4  # evaluation-orbit renders of the field
MESH_CLEAN_SECONDS = 2.0  # cleaning and decimating the marching-cubes mesh to export.target_faces
SECONDS_PER_DISTILL_PIXEL = 8.2e-5  # one rendered pixel per score-distillation step (render + backward)
SECONDS_PER_DISTILL_VIEW = 0.0375  # one view through encode + guided denoiser per score-distillation step


@dataclass
class ExportConfig:
    resolution: int = 128  # marching-cubes grid points per axis
    threshold: float = 10.0  # density level of the surface
    formats: list[MeshFormat] = dataclasses.field(default_factory=lambda: ["glb", "ply", "obj"])
    keep_largest: bool = True  # drop every connected component but the largest
    target_faces: int = 100_000
    pointcloud_points: int = 20_000
    turntable_frames: int = 36
    turntable_size: int = 256
    turntable_elevation: float = 15.0
    video: bool = True
    gif: bool = True


def estimate_export_seconds(e: ExportConfig) -> float:
    return e.resolution**3 * SECONDS_PER_GRID_POINT + e.turntable_frames * e.turntable_size**2 * SECONDS_PER_TURNTABLE_PIXEL


# --- single objects with a prior: shared configs and estimates --------------------------------------

@functools.lru_cache(maxsize=2)
def cached_prior(name: str, model_path: str | None) -> Prior:
    """Priors are frozen, so one loaded copy serves every job in the process (tests, benchmarks)."""
    return load_prior(name, None if model_path is None else Path(model_path))


def object_recon_config() -> ReconConfig:
    """The engine for generated views of one object in ShapeWorld's framing: white background,
    view-independent colour, mask loss on alpha, random backgrounds while training."""
    recon = ReconConfig(steps=150, batch_rays=1024, mask_loss_weight=1.0)
    recon.field.view_dependent = False
    recon.field.encoding.kind = "hash"
    recon.field.encoding.hash.levels = 8
    recon.field.encoding.hash.log2_table = 14
    recon.field.encoding.hash.max_resolution = 128
    recon.render.aabb = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    recon.render.near, recon.render.far = 1.0, 4.0
    recon.render.step_size = 0.04
    recon.render.background = "random"
    recon.render.occupancy.resolution = 32
    recon.render.occupancy.warmup_steps = 32
    recon.optim.lr = 0.02
    return recon


def object_export_config() -> ExportConfig:
    """Export sized for one small object: a 64^3 grid, 20k faces, a short 128-pixel turntable."""
    return ExportConfig(resolution=64, threshold=5.0, target_faces=20_000, pointcloud_points=5_000,
                        turntable_frames=24, turntable_size=128, video=True, gif=True)


def estimate_views_seconds(views: int, steps: int) -> float:
    """Loading the prior and sampling `views` generated views in `steps` sampler steps."""
    return PRIOR_LOAD_SECONDS + views * steps * SECONDS_PER_VIEW_STEP


def estimate_fit_seconds(recon: ReconConfig) -> float:
    """The engine's fit on generated views."""
    return recon.steps * recon.batch_rays * SECONDS_PER_FIT_RAY


def estimate_object_export_seconds(export: ExportConfig, render_size: int) -> float:
    """`export_field` plus cleaning plus the 8 evaluation-orbit renders of `save_renders`."""
    return estimate_export_seconds(export) + MESH_CLEAN_SECONDS + 8 * render_size**2 * SECONDS_PER_RENDER_PIXEL


def save_png(image: Tensor, path: Path) -> None:
    """An (H, W, 3 or 4) image in [0, 1] as an 8-bit PNG, written atomically."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    with atomic_output(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def read_png(path: Path) -> Tensor:
    """An 8-bit PNG as float (H, W, C) in [0, 1]."""
    return torch.from_numpy(np.array(Image.open(path))).float() / 255


# --- generated views -----------------------------------------------------------------------------

def pass_cameras(passes: list[int], elevations: list[float], radius: float, fov_y_deg: float, size: int) -> Cameras:
    """Cameras for views generated in passes: each pass spreads its views evenly in azimuth, later
    passes rotated to fall between earlier ones; elevations cycle through `elevations`."""
    azimuths, elevs = [], []
    for p, count in enumerate(passes):
        for j in range(count):
            azimuths.append(360.0 * (j + p / len(passes)) / count)
            elevs.append(elevations[(j + p) % len(elevations)])
    return orbit(elevs, azimuths, radius, fov_y_deg, size, size)


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


# --- differentiable renders for score distillation -------------------------------------------------

PriorBackground = Literal["alpha", "white", "random"]


def flat_rays(cams: Cameras) -> tuple[Tensor, Tensor]:
    """Origins and directions (V*H*W, 3) through every pixel centre of `cams`, view after view."""
    origins, dirs = generate_rays(cams)
    return origins.reshape(-1, 3), dirs.reshape(-1, 3)


def random_orbit_set(count: int, elevation_range: list[float], radius: float, fov_y_deg: float, size: int,
                     generator: torch.Generator) -> Cameras:
    """One multi-view set for score distillation: `count` azimuths evenly spaced from a random
    offset, one random elevation in [min, max] degrees shared by the set."""
    lo, hi = elevation_range
    offset, elevation = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    azimuths = [(360.0 * (offset + k / count)) % 360.0 for k in range(count)]
    return orbit([lo + elevation * (hi - lo)] * count, azimuths, radius, fov_y_deg, size, size)


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


# --- rendering and export of a field -------------------------------------------------------------

@torch.no_grad()
def render_images(field: NerfField, renderer: VolumeRenderer, cameras: Cameras, chunk: int = 16384) -> dict[str, Tensor]:
    """Whole images onto the renderer's fixed background: rgb (N, H, W, 3), opacity (N, H, W)."""
    origins, dirs = flat_rays(cameras)
    background = renderer.background(1)[0].detach()
    parts = [renderer.render_rays(field, origins[s:s + chunk], dirs[s:s + chunk], background)
             for s in range(0, len(origins), chunk)]
    shape = (len(cameras), cameras.height, cameras.width)
    return {key: torch.cat([p[key] for p in parts]).reshape(*shape, -1).squeeze(-1) for key in ("rgb", "opacity")}


def save_renders(ctx: StageContext, field: NerfField, renderer: VolumeRenderer, cameras: Cameras) -> None:
    """`renders/NNN.png`: RGB over the background plus the rendered opacity as alpha (role render)."""
    out = render_images(field, renderer, cameras)
    for i, (rgb, opacity) in enumerate(zip(out["rgb"], out["opacity"])):
        path = ctx.path / "renders" / f"{i:03d}.png"
        save_png(torch.cat([rgb, opacity[..., None]], -1), path)
        ctx.add_artifact(path, "render", view=i)


def field_mesh(field: NerfField, cfg: ExportConfig, resolution: int) -> trimesh.Trimesh:
    """Marching cubes of the density over the field's box, cleaned, with vertex colours seen from
    outside looking towards the centre."""

    @torch.no_grad()
    def density(points: Tensor, chunk: int = 65536) -> Tensor:
        return torch.cat([field.density(points[s:s + chunk]) for s in range(0, len(points), chunk)])

    @torch.no_grad()
    def color(points: Tensor) -> Tensor:
        inward = torch.nn.functional.normalize(-points, dim=-1)
        return field(points, inward)[1]

    raw = extract_mesh(density, field.aabb, resolution, cfg.threshold, color_fn=color)
    return clean_mesh(raw, keep_largest=cfg.keep_largest, target_faces=cfg.target_faces)


def export_field(ctx: StageContext, field: NerfField, cfg: ExportConfig) -> trimesh.Trimesh | None:
    """Mesh files, a point cloud on the mesh and a turntable of it; None (logged) when the field
    has no surface at `cfg.threshold`."""
    try:
        mesh = field_mesh(field, cfg, cfg.resolution)
    except UserError as exc:  # an empty or saturated field: nothing to mesh, not bad input
        ctx.log(f"no mesh exported: {exc}")
        ctx.event(message="no surface found at export.threshold; no mesh exported")
        return None
    for fmt in cfg.formats:
        path = write_mesh(mesh, ctx.path / f"mesh.{fmt}")
        ctx.add_artifact(path, "mesh", format=fmt, up="y" if fmt == "glb" else "z")
    points, faces = trimesh.sample.sample_surface(mesh, cfg.pointcloud_points, seed=ctx.np_rng)
    colors = mesh.visual.face_colors[faces, :3]  # averaged vertex colours (trimesh's grey when uncoloured)
    ctx.add_artifact(write_pointcloud_ply(points, colors, ctx.path / "pointcloud.ply"), "pointcloud", up="z")
    frames = render_turntable(mesh, cfg.turntable_frames, cfg.turntable_size, cfg.turntable_elevation)
    if cfg.video:
        ctx.add_artifact(write_video(frames, ctx.path / "turntable.mp4"), "turntable")
    if cfg.gif:
        ctx.add_artifact(write_gif(frames, ctx.path / "turntable.gif"), "turntable")
    ctx.set_metrics(mesh_faces=len(mesh.faces), mesh_watertight=bool(mesh.is_watertight))
    return mesh


TrainerFactory = Callable[[StageContext, int], ReconTrainer]


def fit_views(ctx: StageContext, make_trainer: TrainerFactory) -> None:
    """The fit stage of generate-then-reconstruct jobs: train on the saved views, checkpointed
    and resumable; `make_trainer(ctx, seed)` builds the job's trainer (its views and weights)."""
    cfg = ctx.config
    trainer = make_trainer(ctx, ctx.stage_seed)
    train_checkpointed(ctx, trainer, cfg.recon.steps, cfg.fit.checkpoint_every, cfg.fit.log_every)
    ctx.shared["model"] = (trainer.field, trainer.renderer)


def train_checkpointed(ctx: StageContext, trainer: ReconTrainer, total: int, checkpoint_every: int,
                       log_every: int, step: Callable[[], dict[str, float]] | None = None) -> None:
    """Run `total` training steps as the stage's resumable loop, logging loss, training PSNR and any
    other stats, and record the stage's final checkpoint as an artifact. `step` (default
    `trainer.step`) may do more than the trainer's step, as long as all its state is the trainer's."""
    step = step or trainer.step
    for index in ctx.steps(total, every=checkpoint_every, state=trainer.state_dict,
                           restore=trainer.load_state_dict):
        stats = step()
        if (index + 1) % log_every == 0 or index + 1 == total:
            extra = {k: v for k, v in stats.items() if k not in ("loss", "psnr")}
            ctx.event(index + 1, total, loss=stats["loss"], train_psnr=stats["psnr"], **extra)
    ctx.add_artifact(ctx.run.checkpoint_path(ctx.stage), "checkpoint")


def fitted_model(ctx: StageContext, make_trainer: TrainerFactory) -> tuple[NerfField, VolumeRenderer]:
    """The fit stage's field and renderer, re-loaded from its checkpoint (for a resumed export)."""
    trainer = make_trainer(ctx, 0)
    trainer.load_state_dict(ctx.read_checkpoint("fit").state)
    return trainer.field, trainer.renderer
