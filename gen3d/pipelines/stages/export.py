"""The export stage: a field's mesh (GLB/PLY/OBJ), a point cloud on it, a turntable of it and
renders of the field at the evaluation orbit."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import trimesh
from torch import Tensor

from gen3d.cameras import Cameras, flat_rays
from gen3d.data.images import save_png
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
from gen3d.pipelines.stages.fit import TrainerFactory
from gen3d.pipelines.stages.reload import stage_model
from gen3d.render.volume import VolumeRenderer
from gen3d.runs import StageContext
from gen3d.shapeworld.scenes import eval_cameras

MeshFormat = Literal["glb", "ply", "obj"]


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


def object_export_config() -> ExportConfig:
    """Export sized for one small object: a 64^3 grid, 20k faces, a short 128-pixel turntable."""
    return ExportConfig(resolution=64, threshold=5.0, target_faces=20_000, pointcloud_points=5_000,
                        turntable_frames=24, turntable_size=128, video=True, gif=True)


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


def export_object(ctx: StageContext, make_trainer: TrainerFactory) -> None:
    """The export stage of single-object jobs: `export_field`, then renders at the evaluation orbit."""
    field, renderer = stage_model(ctx, make_trainer)
    export_field(ctx, field, ctx.config.export)
    save_renders(ctx, field, renderer, eval_cameras(ctx.config.render_size))
