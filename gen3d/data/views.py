"""Which K views to train on, chosen the same way everywhere so "3 views" always means the same frames."""

from __future__ import annotations

import torch
from torch import Tensor


def select_views(centers: Tensor, k: int) -> list[int]:
    """Farthest-point sampling on camera centres (N, 3), starting from frame 0.

    Returns k distinct frame indices in the order picked; each pick is the frame farthest from all
    frames picked so far (ties go to the lowest index), so the views spread over the capture and
    the first k picks of a larger k are the same frames. No randomness: the choice depends only on
    the centres.
    """
    n = centers.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"cannot select {k} views from {n} cameras")
    points = centers.detach().to(torch.float64)
    picked = [0]
    nearest = (points - points[0]).norm(dim=-1)
    nearest[0] = -1.0
    for _ in range(k - 1):
        index = int(torch.argmax(nearest))
        picked.append(index)
        nearest = torch.minimum(nearest, (points - points[index]).norm(dim=-1))
        nearest[picked] = -1.0
    return picked
