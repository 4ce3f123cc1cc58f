"""Training losses: epsilon / x0 / v / flow regression with loss weightings and condition dropout.

Every weighting is defined as a weight on the x0 error, w(snr) * ||x0_hat - x0||^2, and applied
to the network's own regression target by the exact factor between the two errors, so the
same weighting means the same thing for any prediction type.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from gen3d.diffusion.denoiser import Cond, Denoiser, _expand, estimate_to_target

Weighting = Literal["uniform", "snr", "min_snr", "edm"]


def target_error_factor(snr: Tensor, alpha: Tensor, sigma: Tensor, prediction: str) -> Tensor:
    """||target error||^2 = factor * ||x0 error||^2 at the same x_t."""
    if prediction == "epsilon":
        return snr
    if prediction == "x0":
        return torch.ones_like(snr)
    if prediction == "v":
        return (alpha**2 + sigma**2) ** 2 / sigma**2  # = snr + 1 when alpha^2 + sigma^2 = 1
    if prediction == "flow":
        return 1 / sigma**2
    raise ValueError(f"unknown prediction type '{prediction}'")


def x0_weight(weighting: Weighting, snr: Tensor, sigma_ve: Tensor, prediction: str,
              alpha: Tensor, sigma: Tensor, gamma: float = 5.0, sigma_data: float = 0.5) -> Tensor:
    """w(t) on the x0 error; "uniform" is plain MSE on the network's own target."""
    if weighting == "uniform":
        return target_error_factor(snr, alpha, sigma, prediction)
    if weighting == "snr":
        return snr
    if weighting == "min_snr":
        return torch.clamp(snr, max=gamma)
    if weighting == "edm":
        return (sigma_ve**2 + sigma_data**2) / (sigma_ve * sigma_data) ** 2
    raise ValueError(f"unknown loss weighting '{weighting}'")


def drop_condition(cond: Cond, uncond: Cond, p: float, generator: torch.Generator) -> Cond:
    """Replace each sample's conditioning by the unconditional one with probability p (for CFG)."""
    if p <= 0:
        return cond
    out = {}
    batch = next(v.shape[0] for v in cond.values() if isinstance(v, Tensor))
    drop = torch.rand(batch, generator=generator) < p
    for key, value in cond.items():
        if not isinstance(value, Tensor):
            out[key] = value
            continue
        u = uncond[key].to(value)
        u = u.expand_as(value) if u.shape[0] == 1 else u
        out[key] = torch.where(_expand(drop, value).to(torch.bool), u, value)
    return out


def diffusion_loss(denoiser: Denoiser, x0: Tensor, generator: torch.Generator, cond: Cond | None = None, *,
                   weighting: Weighting = "uniform", gamma: float = 5.0, uncond: Cond | None = None,
                   cond_drop_prob: float = 0.0, t: Tensor | None = None, group: int = 1,
                   reduce: bool = True) -> Tensor:
    """One denoising-regression loss on clean samples x0 (random t and noise from `generator`).

    `group` > 1 shares one time among each run of `group` consecutive samples (the views of a
    multi-view set); condition dropout is per sample, so callers drop per set through `uncond`.
    """
    n = x0.shape[0]
    if t is None:
        t = denoiser.schedule.sample_time(n // group, generator).repeat_interleave(group)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    alpha, sigma = (v.to(x0) for v in denoiser.schedule.alpha_sigma(t))
    x_t = _expand(alpha, x0) * x0 + _expand(sigma, x0) * noise
    if cond is not None and uncond is not None and cond_drop_prob > 0:
        cond = drop_condition(cond, uncond, cond_drop_prob, generator)
    output = denoiser.output(x_t, t, cond)
    target = estimate_to_target(x0, noise, alpha, sigma, denoiser.prediction)
    snr = (alpha / sigma) ** 2
    w_x0 = x0_weight(weighting, snr, sigma / alpha, denoiser.prediction, alpha, sigma, gamma)
    w = w_x0 / target_error_factor(snr, alpha, sigma, denoiser.prediction)
    per_sample = ((output - target) ** 2).flatten(1).mean(1) * w
    return per_sample.mean() if reduce else per_sample
