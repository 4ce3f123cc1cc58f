"""Marching cubes over any density field: the bridge from a trained field to a mesh.

The field is evaluated on a regular grid in chunks (bounded memory, any model that maps points to
densities), and the grid is padded with empty space so the surface closes at the box walls instead
of leaving holes; later cleaning (`gen3d.export.clean`) removes what is not the object.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import trimesh
from scipy import ndimage
from skimage.measure import marching_cubes
from torch import Tensor

from gen3d.cameras import Cameras
from gen3d.errors import UserError
from gen3d.render.mesh import render_mesh

PointFn = Callable[[Tensor], Tensor]


def _evaluate(fn: PointFn, points: Tensor, chunk: int) -> Tensor:
    """fn over (P, 3) points in chunks, without autograd; results concatenated in order."""
    with torch.no_grad():
        return torch.cat([fn(points[i:i + chunk]).detach().float().cpu() for i in range(0, len(points), chunk)])


def _grid_axes(aabb: Tensor, resolution: int) -> list[Tensor]:
    return [torch.linspace(float(aabb[0, k]), float(aabb[1, k]), resolution) for k in range(3)]


def density_grid(density_fn: PointFn, aabb, resolution: int, chunk: int = 65536) -> np.ndarray:
    """(R, R, R) densities at the grid points spanning `aabb` ((2, 3): min and max corners), x-major."""
    aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)
    xs, ys, zs = _grid_axes(aabb, resolution)
    points = torch.stack(torch.meshgrid(xs, ys, zs, indexing="ij"), dim=-1).reshape(-1, 3)
    return _evaluate(density_fn, points, chunk).reshape(resolution, resolution, resolution).numpy()


def solid_indicator(grid: np.ndarray, threshold: float, closing: int, blur: float = 1.0) -> np.ndarray:
    """A smooth level function (0 is the surface, positive inside) of the solid `grid > threshold`,
    with pores and tunnels up to about 2 * `closing` cells wide closed and hidden cavities filled.

    Densities fitted to views that disagree are noisy inside the object; their level set is riddled
    with tiny handles and tunnels (Euler characteristics in the hundreds below zero) that no view
    shows. The level function is the log density over the threshold, scaled so the solid's median
    is 1 and clipped to [-1, 1] (symmetric plateaus: blurring does not move the surface, and its
    sub-cell position survives), set to 1 wherever closing and filling declared the solid, and
    blurred by `blur` cells: watertight, smooth where the field is noisy."""
    solid = grid > threshold
    pad = closing + 1
    filled = np.pad(solid, pad)
    if closing > 0:
        filled = ndimage.binary_closing(filled, iterations=closing)
    filled = ndimage.binary_fill_holes(filled)[pad:-pad, pad:-pad, pad:-pad]
    ratio = np.log(np.maximum(grid, 1e-30) / threshold)
    inside = float(np.median(ratio[solid])) if solid.any() else 1.0
    level = np.clip(ratio / max(inside, 1e-6), -1.0, 1.0).astype(np.float32)
    level[filled & ~solid] = 1.0
    return ndimage.gaussian_filter(level, blur) if blur > 0 else level


def grid_mesh(grid: np.ndarray, aabb, threshold: float, solidify: int | None = None) -> trimesh.Trimesh:
    """The `threshold` level set of a density grid (`density_grid`'s layout over `aabb`) as a closed
    mesh with outward normals; solidify (closing cells, 0 included) meshes `solid_indicator` instead."""
    aabb = torch.as_tensor(aabb, dtype=torch.float64).reshape(2, 3)
    if not grid.max() > threshold:
        raise UserError(f"marching cubes threshold {threshold} is above every density in the box "
                        f"(max {grid.max():.4g}); no surface to extract")
    if solidify is not None:
        grid, threshold = solid_indicator(grid, threshold, solidify), 0.0
        if not grid.max() > threshold:  # a solid thinner than the smoothing
            raise UserError("the solid above the marching cubes threshold is too thin to keep; no surface to extract")
    padded = np.pad(grid, 1, mode="constant", constant_values=min(float(grid.min()), threshold) - 1.0)
    spacing = ((aabb[1] - aabb[0]) / (grid.shape[0] - 1)).numpy()
    # "ascent": the object is where values rise above the level, which orients faces outward.
    verts, faces, _, _ = marching_cubes(padded, level=threshold, spacing=tuple(spacing), gradient_direction="ascent")
    verts = verts - spacing + aabb[0].numpy()  # undo the one-cell padding, then move to world space
    return trimesh.Trimesh(verts, faces, process=True)


def best_threshold(grid: np.ndarray, aabb, candidates: list[float], cameras: Cameras, masks: Tensor,
                   solidify: int | None = None) -> tuple[float, trimesh.Trimesh]:
    """The candidate level whose mesh (`grid_mesh` with `solidify`) has silhouettes that best match
    `masks` (N, H, W) bool at `cameras` (intersection over union): the level the renders put the
    surface at, with its mesh. UserError when no candidate has a surface.

    A density level is only a proxy for where a radiance field's surface shows; how dense the
    surface must be depends on the scene and the training (lego's best level is twice its
    nominal one), so it is read off the field's own rendered opacity."""
    best: tuple[float, float, trimesh.Trimesh] | None = None
    error: UserError | None = None
    for level in candidates:
        try:
            mesh = grid_mesh(grid, aabb, level, solidify)
        except UserError as exc:  # no surface at this level
            error = error or exc
            continue
        silhouette = render_mesh(mesh, cameras).rgba[..., 3] > 0.5
        score = (silhouette & masks).sum().item() / max((silhouette | masks).sum().item(), 1)
        if best is None or score > best[0]:
            best = (score, level, mesh)
    if best is None:
        raise error
    return best[1], best[2]


def extract_mesh(density_fn: PointFn, aabb, resolution: int, threshold: float,
                 color_fn: PointFn | None = None, chunk: int = 65536, solidify: int | None = None) -> trimesh.Trimesh:
    """The `threshold` level set of `density_fn` inside `aabb` as a closed mesh with outward normals.

    density_fn maps (P, 3) world points to (P,) or (P, 1) densities (higher inside). color_fn, if
    given, maps (P, 3) points to (P, 3) RGB in [0, 1], evaluated at the mesh vertices. solidify
    as in `grid_mesh`.
    """
    grid = checked_density_grid(density_fn, aabb, resolution, chunk)
    mesh = grid_mesh(grid, aabb, threshold, solidify)
    if color_fn is not None:
        rgb = _evaluate(color_fn, torch.as_tensor(mesh.vertices, dtype=torch.float32), chunk).clamp(0, 1).numpy()
        mesh.visual.vertex_colors = np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], axis=1).astype(np.uint8)
    return mesh


def checked_density_grid(density_fn: PointFn, aabb, resolution: int, chunk: int = 65536) -> np.ndarray:
    """`density_grid` with the resolution and the values checked (UserError, ValueError)."""
    if resolution < 2:
        raise UserError(f"marching cubes resolution must be at least 2, got {resolution}")
    grid = density_grid(density_fn, aabb, resolution, chunk)
    if not np.isfinite(grid).all():
        raise ValueError("the density field returned NaN or infinite values")
    return grid
