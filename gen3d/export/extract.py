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
from skimage.measure import marching_cubes
from torch import Tensor

from gen3d.errors import UserError

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


def extract_mesh(density_fn: PointFn, aabb, resolution: int, threshold: float,
                 color_fn: PointFn | None = None, chunk: int = 65536) -> trimesh.Trimesh:
    """The `threshold` level set of `density_fn` inside `aabb` as a closed mesh with outward normals.

    density_fn maps (P, 3) world points to (P,) or (P, 1) densities (higher inside). color_fn, if
    given, maps (P, 3) points to (P, 3) RGB in [0, 1], evaluated at the mesh vertices.
    """
    if resolution < 2:
        raise UserError(f"marching cubes resolution must be at least 2, got {resolution}")
    aabb = torch.as_tensor(aabb, dtype=torch.float64).reshape(2, 3)
    grid = density_grid(density_fn, aabb, resolution, chunk)
    if not np.isfinite(grid).all():
        raise ValueError("the density field returned NaN or infinite values")
    if not grid.max() > threshold:
        raise UserError(f"marching cubes threshold {threshold} is above every density in the box "
                        f"(max {grid.max():.4g}); no surface to extract")
    padded = np.pad(grid, 1, mode="constant", constant_values=min(float(grid.min()), threshold) - 1.0)
    spacing = ((aabb[1] - aabb[0]) / (resolution - 1)).numpy()
    # "ascent": the object is where values rise above the level, which orients faces outward.
    verts, faces, _, _ = marching_cubes(padded, level=threshold, spacing=tuple(spacing), gradient_direction="ascent")
    verts = verts - spacing + aabb[0].numpy()  # undo the one-cell padding, then move to world space
    colors = None
    if color_fn is not None:
        rgb = _evaluate(color_fn, torch.as_tensor(verts, dtype=torch.float32), chunk).clamp(0, 1).numpy()
        colors = np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], axis=1).astype(np.uint8)
    return trimesh.Trimesh(verts, faces, vertex_colors=colors, process=True)
