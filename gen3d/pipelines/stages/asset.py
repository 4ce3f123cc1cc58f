"""A trained field as the files a user takes away: a mesh coloured by what the field renders.

Geometry comes from marching cubes over the density; colour does not come from the level set
(where the colour head is barely trained, which made meshes pale) but from the field's radiance
seen along each surface normal (`gen3d.render.surface`): into every texel of a UV atlas for the
textured GLB, and onto the vertices for PLY, OBJ and the point cloud. `mesh_psnr` scores the
exported mesh, rendered unlit, against the images the field itself is scored on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from torch import Tensor

from gen3d.cameras import Cameras
from gen3d.export.metrics import mesh_psnr
from gen3d.export.texture import ColorSource, auto_texture_size, bake_texture, color_vertices
from gen3d.render.mesh import RayCaster, render_mesh
from gen3d.render.surface import facing_views, projected_colors, surface_radiance
from gen3d.render.volume import RadianceField

DEFAULT_TEXTURE_SIZE = 1024  # without scoring views to size it from


@dataclass
class ScoringViews:
    """Images an exported mesh is compared with (mesh_psnr) and sized for (automatic texture size):
    cameras, images (N, H, W, 3) already composited onto `background`, and the field's rendered
    opacity (N, H, W) at those cameras when known (the export matches its silhouettes)."""

    cameras: Cameras
    images: Tensor
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    opacity: Tensor | None = None

    def pixel_footprint(self) -> float:
        """World size of one pixel at the scene's centre, for the closest camera (the sharpest need)."""
        distance = self.cameras.centers.norm(dim=-1)
        return float((distance / self.cameras.fy).min())


FACING_VIEWS = 3  # camera directions averaged per surface point of a view-dependent field


def field_color_source(field: RadianceField, reach: float, mesh: trimesh.Trimesh | None = None,
                       photo_cameras: Cameras | None = None) -> ColorSource:
    """The field's radiance at surface points (see gen3d.render.surface): seen along their normals,
    or, given the cameras the field was trained from (for a view-dependent field), from the
    FACING_VIEWS of them that face each point most squarely and that `mesh` does not hide it from:
    the colours the photos showed there, not a direction no photo saw."""
    caster = RayCaster(mesh) if mesh is not None and photo_cameras is not None else None

    def visible(origins: Tensor, targets: Tensor) -> Tensor:
        return torch.from_numpy(caster.unobstructed(origins.double().numpy(), targets.double().numpy(), reach))

    def source(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        device = field.aabb.device  # the field's, a GPU's or the CPU
        p = torch.tensor(points, dtype=torch.float32, device=device)
        n = torch.tensor(normals, dtype=torch.float32, device=device)
        dirs = weights = None
        if photo_cameras is not None:
            dirs, weights = facing_views(p.cpu(), n.cpu(), photo_cameras.centers.float().cpu(), FACING_VIEWS,
                                         visible if caster is not None else None)
            dirs, weights = dirs.to(device), weights.to(device)
        return surface_radiance(field, p, n, reach, view_dirs=dirs, view_weights=weights).double().cpu().numpy()

    return source


@dataclass
class SourceImages:
    """Posed images a mesh may take its colours from (an object job's generated views): cameras
    and straight RGBA (N, H, W, 4) in [0, 1]."""

    cameras: Cameras
    rgba: Tensor


# Weight of the field's own colour beside the images' (a squarely seen, covered pixel weighs 1):
# it fills what no image sees (an object's underside) and fades out smoothly, reaching zero where
# the images' weight reaches FIELD_COLOR_CUTOFF, so well-seen points never pay for a field read.
FIELD_COLOR_WEIGHT = 0.05
FIELD_COLOR_CUTOFF = 0.5


def projected_color_source(mesh: trimesh.Trimesh, images: SourceImages, fallback: ColorSource,
                           tolerance: float) -> ColorSource:
    """Colours as `images` show the mesh's surface (`projected_colors`: visible, facing, covered
    pixels), blended with `fallback` (the field's radiance) where the images see little. The views
    are what the user saw; the field's colour carries the noise of a short fit (speckles)."""
    depth = render_mesh(mesh, images.cameras).depth

    def source(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        colour, weight = projected_colors(torch.tensor(points), torch.tensor(normals), images.cameras,
                                          images.rgba, depth, tolerance)
        field_weight = FIELD_COLOR_WEIGHT * (1 - weight / FIELD_COLOR_CUTOFF).clamp_min(0)
        needed = (field_weight > 0).numpy()
        field = torch.zeros_like(colour)
        if needed.any():
            field[needed] = torch.from_numpy(fallback(points[needed], normals[needed])).float()
        blended = (weight[:, None] * colour + field_weight[:, None] * field) / (weight + field_weight)[:, None]
        return blended.double().numpy()

    return source


def texture_size_for(mesh: trimesh.Trimesh, setting: int, views: ScoringViews | None) -> int:
    """`export.texture_size`, or (0) a size fitted to how large the mesh appears in the scoring views."""
    if setting > 0:
        return setting
    return DEFAULT_TEXTURE_SIZE if views is None else auto_texture_size(mesh, views.pixel_footprint())


def reach_for(aabb: Tensor, resolution: int, cells: float) -> float:
    """World length of `cells` marching-cubes cells (the longest box side)."""
    extent = float((aabb[1] - aabb[0]).max())
    return cells * extent / max(resolution - 1, 1)


@dataclass
class MeshAsset:
    """The coloured mesh (vertex colours), when asked its textured twin (the GLB), and the density
    level it was extracted at."""

    colored: trimesh.Trimesh
    textured: trimesh.Trimesh | None
    threshold: float

    @property
    def primary(self) -> trimesh.Trimesh:
        return self.textured if self.textured is not None else self.colored

    def scores(self, views: ScoringViews) -> dict[str, float]:
        scores = {"mesh_psnr": mesh_psnr(self.primary, views.cameras, views.images, views.background)}
        if self.textured is not None:
            scores["mesh_psnr_vertex"] = mesh_psnr(self.colored, views.cameras, views.images, views.background)
        return {k: round(v, 4) if math.isfinite(v) else v for k, v in scores.items()}


def mesh_asset(mesh: trimesh.Trimesh, source: ColorSource, texture: bool, texture_size: int,
               threshold: float) -> MeshAsset:
    """Colour a bare mesh (extracted at density `threshold`) from `source`: vertex colours always,
    a baked texture when `texture`."""
    textured = bake_texture(mesh, source, texture_size) if texture else None
    return MeshAsset(color_vertices(mesh, source), textured, threshold)
