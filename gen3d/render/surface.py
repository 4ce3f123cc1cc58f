"""What a radiance field shows at points of an extracted surface: the colour source of mesh export.

A mesh's surface is a level set of the density, but the renders show the colour where the
rendering weights concentrate, which can sit a little in front of or behind that level set (and
the colour head is not trained inside the object at all). So each surface point is seen the way a
camera would see it: a short ray comes in along the surface normal, starts `reach` outside the
point, ends `reach` inside it, and its volume-rendered colour (normalised by its opacity, so no
background mixes in) is the point's colour. View-dependent fields are read from the normal's
direction. Where such a ray meets no density at all, the colour head at the point itself is used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gen3d.render.volume import RadianceField


@torch.no_grad()
def surface_radiance(field: RadianceField, points: Tensor, normals: Tensor, reach: float, samples: int = 13,
                     chunk: int = 32768) -> Tensor:
    """(P, 3) colour in [0, 1] of surface points (P, 3) with outward unit normals (P, 3).

    `reach` is in world units (a few marching-cubes cells); `samples` points per short ray.
    """
    points, normals = points.float(), torch.nn.functional.normalize(normals.float(), dim=-1)
    offsets = torch.linspace(reach, -reach, samples, device=points.device)  # outside -> inside, along the incoming ray
    delta = 2 * reach / max(samples - 1, 1)
    return torch.cat([_chunk_radiance(field, points[s:s + chunk], normals[s:s + chunk], offsets, delta)
                      for s in range(0, len(points), chunk)])


def _chunk_radiance(field: RadianceField, points: Tensor, normals: Tensor, offsets: Tensor, delta: float) -> Tensor:
    n, k = len(points), len(offsets)
    x = (points[:, None] + offsets[None, :, None] * normals[:, None]).reshape(-1, 3)
    d = (-normals)[:, None].expand(n, k, 3).reshape(-1, 3)
    sigma, features = field.geometry(x)
    alpha = 1 - torch.exp(-sigma.reshape(n, k) * delta)
    transmittance = torch.cumprod(torch.cat([torch.ones(n, 1, device=alpha.device), 1 - alpha[:, :-1]], 1), 1)
    weights = alpha * transmittance
    rgb = field.color(features, d).reshape(n, k, 3)
    total = weights.sum(1, keepdim=True)
    seen = (weights[..., None] * rgb).sum(1) / total.clamp_min(1e-8)
    at_point = rgb[:, k // 2]
    return torch.where(total > 1e-3, seen, at_point).clamp(0, 1)
