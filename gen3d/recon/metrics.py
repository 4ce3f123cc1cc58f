"""Image metrics over the last three dims (H, W, C) of images in [0, 1]; leading dims are kept."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for a peak of 1."""
    mse = (pred - target).square().flatten(-3).mean(-1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    w = torch.exp(-x.square() / (2 * sigma**2))
    return w / w.sum()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004): gaussian window, valid region, mean over channels and pixels."""
    lead = pred.shape[:-3]
    h, w, c = pred.shape[-3:]
    x = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2).float()
    y = target.reshape(-1, h, w, c).permute(0, 3, 1, 2).float()
    g = _gaussian_window(window, sigma)
    kx, ky = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(-1).reshape(lead)
