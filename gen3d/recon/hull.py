"""Visual-hull carving: space every view sees as background holds nothing.

With alpha masks this empties most of the occupancy grid before the first step, so training
never pays for samples in empty space while the density field is still untrained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gen3d.cameras import Cameras, project


def visual_hull(points: Tensor, radius: float, cameras: Cameras, alpha: Tensor, threshold: float = 0.01) -> Tensor:
    """Which points (P, 3) may be occupied given views with alpha (N, H, W).

    A point is carved when some view projects it in front of the camera, inside the image, and
    onto background (alpha below `threshold`) everywhere within `radius` world units of it
    (the mask is dilated by the radius's pixel footprint, so carving stays conservative).
    """
    keep = torch.ones(len(points), dtype=torch.bool)
    for v in range(len(cameras)):
        uv, depth = project(points, cameras[v])
        uv, depth = uv[0], depth[0]
        front = depth > 1e-3
        if not front.any():
            continue
        margin = math.ceil(radius * max(cameras.fx[v].item(), cameras.fy[v].item()) / depth[front].min().item()) + 1
        dilated = F.max_pool2d(alpha[v][None, None], 2 * margin + 1, stride=1, padding=margin)[0, 0]
        px, py = uv[:, 0].floor().long(), uv[:, 1].floor().long()
        inside = front & (px >= 0) & (px < cameras.width) & (py >= 0) & (py < cameras.height)
        seen = dilated[py.clamp(0, cameras.height - 1), px.clamp(0, cameras.width - 1)]
        keep &= ~(inside & (seen < threshold))
    return keep
