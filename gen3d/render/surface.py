"""What a radiance field shows at points of an extracted surface: the colour source of mesh export.

A mesh's surface is a level set of the density, but the renders show the colour where the
rendering weights concentrate, which can sit a little in front of or behind that level set (and
the colour head is not trained inside the object at all). So each surface point is seen the way a
camera would see it: a short ray comes in along the surface normal, starts `reach` outside the
point, ends `reach` inside it, and its volume-rendered colour (normalised by its opacity, so no
background mixes in) is the point's colour. A view-dependent field is read from the directions
the point was photographed from when they are given (weighted), else from the normal's. Where
such a ray meets no density at all, the colour head at the point itself is used.

The other colour source is the images a field was fitted to (`projected_colors`): for an object
made from generated views, what those views show at a point is what the user saw, free of the
noise a short fit leaves in the field's colour.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gen3d.cameras import Cameras, project
from gen3d.render.volume import RadianceField


@torch.no_grad()
def surface_radiance(field: RadianceField, points: Tensor, normals: Tensor, reach: float, samples: int = 13,
                     chunk: int = 16384, view_dirs: Tensor | None = None, view_weights: Tensor | None = None) -> Tensor:
    """(P, 3) colour in [0, 1] of surface points (P, 3) with outward unit normals (P, 3).

    `reach` is in world units (a few marching-cubes cells); `samples` points per short ray.
    view_dirs (P, K, 3): unit directions from each point towards cameras that see it, with
    view_weights (P, K) (rows summing to 1; all zero: seen along the normal).
    """
    points, normals = points.float(), torch.nn.functional.normalize(normals.float(), dim=-1)
    if view_dirs is None:
        view_dirs, view_weights = normals[:, None], torch.ones(len(points), 1, device=points.device)
    offsets = torch.linspace(reach, -reach, samples, device=points.device)  # outside -> inside, along the ray
    delta = 2 * reach / max(samples - 1, 1)
    parts = [_chunk_radiance(field, points[s:s + chunk], normals[s:s + chunk], view_dirs[s:s + chunk].float(),
                             view_weights[s:s + chunk].float(), offsets, delta)
             for s in range(0, len(points), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, 3, device=points.device)


def _chunk_radiance(field: RadianceField, points: Tensor, normals: Tensor, view_dirs: Tensor, view_weights: Tensor,
                    offsets: Tensor, delta: float) -> Tensor:
    n, k = len(points), len(offsets)
    x = (points[:, None] + offsets[None, :, None] * normals[:, None]).reshape(-1, 3)
    sigma, features = field.geometry(x)
    alpha = 1 - torch.exp(-sigma.reshape(n, k) * delta)
    transmittance = torch.cumprod(torch.cat([torch.ones(n, 1, device=alpha.device), 1 - alpha[:, :-1]], 1), 1)
    weights = alpha * transmittance
    total = weights.sum(1, keepdim=True)
    unseen = view_weights.sum(1) <= 0  # no camera direction: read along the normal
    view_dirs = torch.where(unseen[:, None, None], normals[:, None].expand_as(view_dirs), view_dirs)
    view_weights = torch.where(unseen[:, None], torch.full_like(view_weights, 1 / view_weights.shape[1]), view_weights)
    colour = torch.zeros(n, 3, device=points.device)
    at_point = torch.zeros(n, 3, device=points.device)
    for v in range(view_dirs.shape[1]):
        d = (-view_dirs[:, v])[:, None].expand(n, k, 3).reshape(-1, 3)
        rgb = field.color(features, d).reshape(n, k, 3)
        seen = (weights[..., None] * rgb).sum(1) / total.clamp_min(1e-8)
        colour += view_weights[:, v:v + 1] * seen
        at_point += view_weights[:, v:v + 1] * rgb[:, k // 2]
    return torch.where(total > 1e-3, colour, at_point).clamp(0, 1)


def facing_views(points: Tensor, normals: Tensor, centers: Tensor, count: int = 3,
                 visible: Callable[[Tensor, Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """The `count` camera directions each surface point faces most squarely, for `surface_radiance`.

    points, normals (P, 3); centers (C, 3) camera positions. Returns unit directions towards the
    cameras (P, count, 3) and weights (P, count) proportional to the cosine with the normal, zero
    for cameras behind the surface or (with `visible`, a test of (origins, targets) -> (R,) bool)
    hidden by the object; rows of zeros mean no camera sees the point.
    """
    to_camera = torch.nn.functional.normalize(centers[None] - points[:, None], dim=-1)  # (P, C, 3)
    cosine = (to_camera * normals[:, None]).sum(-1)
    count = min(count, len(centers))
    best, index = cosine.topk(count, dim=1)
    dirs = torch.gather(to_camera, 1, index[..., None].expand(-1, -1, 3))
    weights = best.clamp_min(0)
    if visible is not None:
        origins = points[:, None].expand(-1, count, -1).reshape(-1, 3)
        seen = visible(origins, centers[index].reshape(-1, 3)).reshape(weights.shape)
        weights = weights * seen
    return dirs, weights / weights.sum(1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def projected_colors(points: Tensor, normals: Tensor, cameras: Cameras, rgba: Tensor, depth: Tensor,
                     tolerance: float, sharpness: float = 4.0) -> tuple[Tensor, Tensor]:
    """What posed images show at surface points: colour (P, 3) and total weight (P,) (0: no image
    sees the point).

    rgba (N, H, W, 4) straight colour; depth (N, H, W) the surface's own depth along each camera's
    -z (0 where it misses), which hides points behind the surface (`tolerance` world units of slack).
    Each image counts by cos(normal, direction to its camera) ** `sharpness` times the alpha it
    shows there, so squarely seen, covered pixels dominate and silhouette fringes fade out.
    """
    uv, z = project(points.float(), cameras)  # (N, P, 2), (N, P)
    n, h, w = depth.shape
    grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], -1)[:, :, None]  # (N, P, 1, 2)
    sampled = F.grid_sample(rgba.permute(0, 3, 1, 2).float(), grid, align_corners=False)[..., 0]  # (N, 4, P)
    px = uv[..., 0].floor().long().clamp(0, w - 1)
    py = uv[..., 1].floor().long().clamp(0, h - 1)
    surface = depth[torch.arange(n)[:, None], py, px]  # (N, P)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h) & (z > 0)
    unhidden = (surface <= 0) | (z <= surface + tolerance)
    to_camera = F.normalize(cameras.centers[:, None] - points[None].float(), dim=-1)
    cosine = (to_camera * F.normalize(normals.float(), dim=-1)[None]).sum(-1).clamp_min(0)
    weight = cosine ** sharpness * sampled[:, 3] * (inside & unhidden)  # (N, P)
    total = weight.sum(0)
    colour = (weight[..., None] * sampled[:, :3].transpose(1, 2)).sum(0) / total.clamp_min(1e-8)[:, None]
    return colour.clamp(0, 1), total
