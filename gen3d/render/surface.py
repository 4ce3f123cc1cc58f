"""What a radiance field shows at points of an extracted surface: the colour source of mesh export.

A mesh's surface is a level set of the density, but the renders show the colour where the
rendering weights concentrate, which can sit a little in front of or behind that level set (and
the colour head is not trained inside the object at all). So each surface point is seen the way a
camera would see it: a short ray comes in along the surface normal, starts `reach` outside the
point, ends `reach` inside it, and its volume-rendered colour (normalised by its opacity, so no
background mixes in) is the point's colour. A view-dependent field is read from the directions
the point was photographed from when they are given (weighted), else from the normal's. Where
such a ray meets no density at all, the colour head at the point itself is used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

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
