"""Image metrics over the last three dims (H, W, C) of images in [0, 1]; leading dims are kept."""

from __future__ import annotations

import torch
from kornia.metrics import ssim as kornia_ssim
from torch import Tensor


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for a peak of 1, per image (kornia's averages a whole batch)."""
    mse = (pred - target).square().flatten(-3).mean(-1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def ssim(pred: Tensor, target: Tensor, window: int = 11) -> Tensor:
    """Structural similarity (Wang et al. 2004: gaussian window of sigma 1.5), over the valid region,
    averaged over channels and pixels."""
    lead = pred.shape[:-3]
    h, w, c = pred.shape[-3:]
    x = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2).float()
    y = target.reshape(-1, h, w, c).permute(0, 3, 1, 2).float()
    return kornia_ssim(x, y, window, padding="valid").flatten(1).mean(-1).reshape(lead)
