"""The export stage: a field's mesh (GLB/PLY/OBJ) coloured by what the field renders, a point
cloud on it, a turntable of it, `mesh_psnr` against the views the field is scored on, and renders
of the field at the evaluation orbit."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import trimesh
from torch import Tensor

from gen3d.cameras import Cameras, flat_rays
from gen3d.config import ranged
from gen3d.data.images import save_png
from gen3d.errors import UserError
from gen3d.export import (
    clean_mesh,
    render_turntable,
    write_gif,
    write_mesh,
    write_pointcloud_ply,
    write_video,
)
from gen3d.export.extract import best_threshold, checked_density_grid, grid_mesh
from gen3d.fields.nerf import NerfField
from gen3d.pipelines.stages.asset import (
    MeshAsset,
    ScoringViews,
    SourceImages,
    field_color_source,
    mesh_asset,
    projected_color_source,
    reach_for,
    texture_size_for,
)
from gen3d.pipelines.stages.fit import TrainerFactory
from gen3d.pipelines.stages.reload import DISTILL_METHODS, stage_model
from gen3d.pipelines.stages.views import load_views
from gen3d.recon.metrics import psnr
from gen3d.recon.trainer import composite_onto
from gen3d.render.mesh import ShadingConfig
from gen3d.render.volume import VolumeRenderer
from gen3d.runs import StageContext
from gen3d.shapeworld.scenes import eval_cameras

MeshFormat = Literal["glb", "ply", "obj"]

# Exported colours already hold the lighting of the images they came from; the turntable adds only
# a little shading for shape, so the preview shows the colours the file has, not them lit twice.
BAKED_LIGHT_PREVIEW = ShadingConfig(ambient=0.75, diffuse=0.25)


@dataclass
class ExportConfig:
    resolution: int = 192  # marching-cubes grid points per axis
    threshold: float = 10.0  # density level of the surface
    formats: list[MeshFormat] = dataclasses.field(default_factory=lambda: ["glb", "ply", "obj"])
    keep_largest: bool = True  # drop every connected component but the largest
    # -1: the raw level set; >= 0: the solid above `threshold`, pores up to 2x this many cells
    # closed, hidden cavities filled, smoothed by one cell (watertight, no hidden tunnels)
    solidify: int = -1
    target_faces: int = 100_000
    smooth: int = ranged(0, low=0)  # Laplacian smoothing passes after cleaning (volume kept; rounds sharp edges a little)
    # pick the level among threshold_ladder(threshold) whose mesh silhouettes match the field's
    # rendered opacity best, where a job has views to compare with
    auto_threshold: bool = True
    texture: bool = True  # GLB with a texture baked from the field (else vertex colours, as PLY/OBJ)
    texture_size: int = 0  # texels across; 0: fitted to the mesh's size in the scoring views
    color_reach: float = 2.0  # colour rays start and end this many marching-cubes cells off the surface
    # field: the field's radiance at the surface; views: what the job's generated views show there
    # (the field's radiance where they see little), for jobs that fitted views
    colors: Literal["field", "views"] = "field"
    pointcloud_points: int = 20_000
    turntable_frames: int = 36
    turntable_size: int = 256
    turntable_elevation: float = 15.0
    video: bool = True
    gif: bool = True


def object_export_config() -> ExportConfig:
    """Export sized for one small object: a 64^3 grid, 20k faces, 10 smoothing passes,
    colours from the generated views, a short 128-pixel turntable seen from 30 degrees up, which
    shows openings such as a torus's hole."""
    return ExportConfig(resolution=64, threshold=5.0, solidify=2, target_faces=20_000, smooth=10, colors="views",
                        pointcloud_points=5_000, turntable_frames=24, turntable_size=128, turntable_elevation=30.0,
                        video=True, gif=True)


def threshold_ladder(threshold: float) -> list[float]:
    """Candidate density levels for `auto_threshold`: a quarter to four times the configured one."""
    return [threshold * 2 ** (k / 2) for k in range(-4, 5)]


@torch.no_grad()
def render_images(field: NerfField, renderer: VolumeRenderer, cameras: Cameras, chunk: int = 16384) -> dict[str, Tensor]:
    """Whole images onto the renderer's fixed background: rgb (N, H, W, 3), opacity (N, H, W), on the CPU
    (the field may run on a GPU)."""
    origins, dirs = (t.to(field.aabb.device) for t in flat_rays(cameras))
    background = renderer.background(1)[0].detach()
    parts = [renderer.render_rays(field, origins[s:s + chunk], dirs[s:s + chunk], background)
             for s in range(0, len(origins), chunk)]
    shape = (len(cameras), cameras.height, cameras.width)
    return {key: torch.cat([p[key] for p in parts]).reshape(*shape, -1).squeeze(-1).cpu()
            for key in ("rgb", "opacity")}


def generated_scoring_views(ctx: StageContext, field: NerfField, renderer: VolumeRenderer,
                            views: SourceImages) -> ScoringViews:
    """The generated `views` (`generated_images`) over the renders' background, as the images
    exports are scored on; the field's own PSNR on them is recorded as `psnr` beside the mesh's."""
    background = renderer.background(1)[0].detach()
    targets = composite_onto(views.rgba, background)
    rendered = render_images(field, renderer, views.cameras)
    ctx.set_metrics(psnr=round(psnr(rendered["rgb"], targets).mean().item(), 4))
    return ScoringViews(views.cameras, targets, tuple(background.tolist()), rendered["opacity"])


def generated_images(run_path: Path) -> SourceImages:
    """The run's saved generated views as images to colour its mesh from."""
    rgba, cameras = load_views(run_path)
    return SourceImages(cameras, rgba)


def save_renders(ctx: StageContext, field: NerfField, renderer: VolumeRenderer, cameras: Cameras) -> None:
    """`renders/NNN.png`: RGB over the background plus the rendered opacity as alpha (role render)."""
    out = render_images(field, renderer, cameras)
    for i, (rgb, opacity) in enumerate(zip(out["rgb"], out["opacity"])):
        path = ctx.path / "renders" / f"{i:03d}.png"
        save_png(torch.cat([rgb, opacity[..., None]], -1), path)
        ctx.add_artifact(path, "render", view=i)


def field_mesh(field: NerfField, cfg: ExportConfig, resolution: int,
               views: ScoringViews | None = None) -> tuple[trimesh.Trimesh, float]:
    """Marching cubes of the density over the field's box, cleaned, and the density level used:
    `cfg.threshold`, or with `cfg.auto_threshold` the level of `threshold_ladder` whose silhouettes
    best match the field's rendered opacity in `views`. No colours yet (`field_asset`)."""

    @torch.no_grad()
    def density(points: Tensor, chunk: int = 65536) -> Tensor:
        return torch.cat([field.density(points[s:s + chunk].to(field.aabb.device)).cpu()
                          for s in range(0, len(points), chunk)])

    aabb = field.world_box().cpu()  # meshes are made on the CPU wherever the field runs
    grid = checked_density_grid(density, aabb, resolution)
    solidify = None if cfg.solidify < 0 else cfg.solidify
    if cfg.auto_threshold and views is not None and views.opacity is not None:
        threshold, raw = best_threshold(grid, aabb, threshold_ladder(cfg.threshold), views.cameras,
                                        views.opacity.cpu() > 0.5, solidify)
    else:
        threshold, raw = cfg.threshold, grid_mesh(grid, aabb, cfg.threshold, solidify)
    return clean_mesh(raw, keep_largest=cfg.keep_largest, target_faces=cfg.target_faces,
                      smooth_iterations=cfg.smooth), threshold


def field_asset(field: NerfField, cfg: ExportConfig, resolution: int, views: ScoringViews | None = None,
                texture: bool | None = None, photo_cameras: Cameras | None = None,
                images: SourceImages | None = None) -> MeshAsset:
    """The field's mesh coloured by what the field renders: vertex colours, and a baked texture
    when `texture` (default `cfg.texture`), sized by `cfg.texture_size` or the scoring views.
    `photo_cameras`: the cameras the field was trained from, to colour a view-dependent field as
    those photos saw each point. `images`: with `cfg.colors` "views", what they show colours it."""
    mesh, threshold = field_mesh(field, cfg, resolution, views)
    reach = reach_for(field.world_box().cpu(), resolution, cfg.color_reach)
    source = field_color_source(field, reach, mesh, photo_cameras)
    if images is not None and cfg.colors == "views":
        source = projected_color_source(mesh, images, source, reach)
    texture = cfg.texture if texture is None else texture
    return mesh_asset(mesh, source, texture, texture_size_for(mesh, cfg.texture_size, views), threshold)


def export_field(ctx: StageContext, field: NerfField, cfg: ExportConfig, views: ScoringViews | None = None,
                 photo_cameras: Cameras | None = None, images: SourceImages | None = None) -> trimesh.Trimesh:
    """Mesh files (the GLB textured when `cfg.texture`), a point cloud on the mesh and a turntable of
    it, and `mesh_psnr` against `views` when given. A field with no surface at `cfg.threshold` fails
    the stage (UserError): a run that exported no mesh must not end `done`."""
    try:
        asset = field_asset(field, cfg, cfg.resolution, views, photo_cameras=photo_cameras, images=images)
    except UserError as exc:  # an empty or saturated field: nothing to mesh
        ctx.event(message="no surface found at export.threshold; no mesh exported")
        raise UserError(f"no mesh exported ({exc}); config key 'export.threshold' is {cfg.threshold}: "
                        "run again with a lower one or more training steps") from None
    for fmt in cfg.formats:
        path = write_mesh(asset.primary if fmt == "glb" else asset.colored, ctx.path / f"mesh.{fmt}")
        ctx.add_artifact(path, "mesh", format=fmt, up="y" if fmt == "glb" else "z",
                         textured=fmt == "glb" and asset.textured is not None)
    mesh = asset.colored
    points, faces = trimesh.sample.sample_surface(mesh, cfg.pointcloud_points, seed=ctx.np_rng)
    colors = mesh.visual.face_colors[faces, :3]  # averaged vertex colours
    ctx.add_artifact(write_pointcloud_ply(points, colors, ctx.path / "pointcloud.ply"), "pointcloud", up="z")
    frames = render_turntable(asset.primary, cfg.turntable_frames, cfg.turntable_size, cfg.turntable_elevation,
                              shading=BAKED_LIGHT_PREVIEW)
    if cfg.video:
        ctx.add_artifact(write_video(frames, ctx.path / "turntable.mp4"), "turntable")
    if cfg.gif:
        ctx.add_artifact(write_gif(frames, ctx.path / "turntable.gif"), "turntable")
    ctx.set_metrics(mesh_faces=len(mesh.faces), mesh_watertight=bool(mesh.is_watertight),
                    mesh_threshold=round(asset.threshold, 4),
                    **(asset.scores(views) if views is not None else {}))
    return mesh


def export_object(ctx: StageContext, make_trainer: TrainerFactory) -> None:
    """The export stage of single-object jobs: `export_field` (scored on the generated views when
    the job fitted some), then renders at the evaluation orbit."""
    field, renderer = stage_model(ctx, make_trainer)
    if ctx.config.method in DISTILL_METHODS:
        export_field(ctx, field, ctx.config.export)
    else:
        images = generated_images(ctx.path)  # read once: scored against and coloured from
        export_field(ctx, field, ctx.config.export, generated_scoring_views(ctx, field, renderer, images),
                     images=images)
    save_renders(ctx, field, renderer, eval_cameras(ctx.config.render_size))
