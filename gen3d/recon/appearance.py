"""Per-photo appearance: the exposure and white balance each real photo was taken with.

Real captures change exposure from photo to photo; a field asked to reproduce every photo exactly
bakes those changes into floaters and view-dependent colour. Each training photo gets a learned
gain and offset per colour channel applied to its rendered colour (nerfacto learns a per-image
embedding for the same reason; six numbers per photo explain exposure without being able to
explain geometry away). Held-out views render with the identity: the field's own colours.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PhotoAppearance(nn.Module):
    """rgb (R, 3) of rays from photos `view` (R,) -> rgb as those photos recorded it."""

    def __init__(self, n_photos: int):
        super().__init__()
        self.log_gain = nn.Parameter(torch.zeros(n_photos, 3))
        self.offset = nn.Parameter(torch.zeros(n_photos, 3))

    def forward(self, rgb: Tensor, view: Tensor) -> Tensor:
        return rgb * torch.exp(self.log_gain[view]) + self.offset[view]

    def penalty(self) -> Tensor:
        """The mean correction over photos, squared: keeps the field's colours those of an average
        photo (a common gain could otherwise drift between the field and every photo)."""
        return self.log_gain.mean(0).square().sum() + self.offset.mean(0).square().sum()
