"""Guidance: classifier-free guidance (one batched forward), guidance rescale, and DPS.

Guided denoisers are Denoisers themselves, so every sampler and score-distillation loss
takes them unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from gen3d.diffusion.denoiser import Cond, Denoiser


def concat_cond(a: Cond, b: Cond) -> Cond:
    """Stack two conditionings along the batch (tensors concatenated, other values must agree)."""
    if set(a) != set(b):
        raise ValueError(f"conditional and unconditional inputs differ in keys: {sorted(a)} vs {sorted(b)}")
    out = {}
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, Tensor):
            if vb.shape[0] == 1 and va.shape[0] > 1:
                vb = vb.expand(va.shape[0], *vb.shape[1:])
            out[key] = torch.cat([va, vb])
        elif va == vb:
            out[key] = va
        else:
            raise ValueError(f"conditioning '{key}' is not a tensor and differs between branches")
    return out


def rescale_guidance(guided: Tensor, cond_out: Tensor, rescale: float) -> Tensor:
    """Match the guided output's per-sample std to the conditional one (Lin et al. 2023, eq. 16)."""
    dims = tuple(range(1, guided.ndim))
    ratio = cond_out.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
    return rescale * guided * ratio + (1 - rescale) * guided


class CFGDenoiser(Denoiser):
    """uncond + scale * (cond - uncond) on the raw outputs, both branches in one forward pass.

    `uncond` is the unconditional (or negative) conditioning with the same keys as `cond`.
    """

    def __init__(self, base: Denoiser, scale: float, uncond: Cond, rescale: float = 0.0):
        super().__init__(base.net, base.schedule, base.prediction)
        self.base, self.scale, self.uncond, self.rescale = base, scale, uncond, rescale

    def output(self, x_t: Tensor, t, cond: Cond | None = None) -> Tensor:
        if self.scale == 1.0:
            return self.base.output(x_t, t, cond)
        t = self._per_sample(t, x_t)
        both = self.base.output(torch.cat([x_t, x_t]), torch.cat([t, t]), concat_cond(cond or {}, self.uncond))
        out_cond, out_uncond = both.chunk(2)
        guided = out_uncond + self.scale * (out_cond - out_uncond)
        return rescale_guidance(guided, out_cond, self.rescale) if self.rescale > 0 else guided


class DPSDenoiser(Denoiser):
    """Diffusion posterior sampling (Chung et al. 2023) for measurements y = H(x) + noise.

    In the k-diffusion form the denoised estimate is x + sigma^2 * score, so adding the likelihood
    term to the score moves x0 by -sigma^2 * grad_x of the residual norm ||y - H(x0_hat(x))||,
    taken through the denoiser; `scale` is DPS's step size zeta.
    """

    def __init__(self, base: Denoiser, measure: Callable[[Tensor], Tensor], y: Tensor, scale: float):
        super().__init__(base.net, base.schedule, base.prediction)
        self.base, self.measure, self.y, self.scale = base, measure, y, scale

    def denoise_ve(self, x: Tensor, sigma_ve, t, cond: Cond | None = None) -> Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0 = self.base.denoise_ve(x_in, sigma_ve, t, cond)
            residual = (self.y - self.measure(x0)).flatten(1).norm(dim=1).sum()
            (grad,) = torch.autograd.grad(residual, x_in)
        sigma = torch.as_tensor(sigma_ve, dtype=x.dtype)
        return x0.detach() - self.scale * sigma**2 * grad
