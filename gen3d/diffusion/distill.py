"""Score distillation: SDS (DreamFusion) and VSD (ProlificDreamer), generic over any Denoiser.

`x` is any differentiable sample in the prior's space (a rendered image, or latents encoded from
one). The losses are surrogates whose gradient with respect to x is the distillation gradient;
no gradient flows through the denoiser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from gen3d.diffusion.denoiser import Cond, Denoiser, _expand
from gen3d.diffusion.guidance import CFGDenoiser
from gen3d.diffusion.losses import diffusion_loss
from gen3d.diffusion.lora import lora_copy
from gen3d.diffusion.schedules import DiscreteSchedule

SDSWeighting = Literal["dreamfusion", "uniform"]


def anneal_t_range(step: int, total: int, start: tuple[float, float], end: tuple[float, float],
                   mode: Literal["linear", "sqrt"] = "linear") -> tuple[float, float]:
    """Time range (fractions of the schedule) shrinking from `start` to `end` over training.

    Large t shapes coarse structure early; small t refines detail late (DreamTime, ProlificDreamer).
    """
    frac = min(max(step / max(total, 1), 0.0), 1.0)
    if mode == "sqrt":
        frac = frac**0.5
    return tuple(s + (e - s) * frac for s, e in zip(start, end))  # type: ignore[return-value]


def sample_distill_time(denoiser: Denoiser, n: int, t_range: tuple[float, float], generator: torch.Generator,
                        group: int = 1) -> Tensor:
    """Times drawn uniformly from a fraction range of the schedule (integers for discrete schedules),
    shared within each run of `group` consecutive samples (one multi-view set)."""
    sched = denoiser.schedule
    lo = sched.t_min + t_range[0] * (sched.t_max - sched.t_min)
    hi = sched.t_min + t_range[1] * (sched.t_max - sched.t_min)
    t = lo + torch.rand(n // group, generator=generator, dtype=torch.float64) * (hi - lo)
    t = t.repeat_interleave(group)
    return t.round() if isinstance(sched, DiscreteSchedule) else t


@dataclass
class DistillInfo:
    t: Tensor
    grad_norm: float


def _surrogate(x: Tensor, grad: Tensor) -> Tensor:
    """0.5 * ||x - sg(x - grad)||^2 / batch: its gradient w.r.t. x is grad / batch."""
    target = (x - grad).detach()
    return 0.5 * ((x - target) ** 2).sum() / x.shape[0]


def _noised(denoiser: Denoiser, x: Tensor, t: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    alpha, sigma = (v.to(x) for v in denoiser.schedule.alpha_sigma(t))
    return _expand(alpha, x) * x.detach() + _expand(sigma, x) * noise, noise, sigma


def sds_weight(sigma: Tensor, weighting: SDSWeighting) -> Tensor:
    if weighting == "dreamfusion":  # w(t) = sigma_t^2 = 1 - alpha_bar for VP schedules
        return sigma**2
    return torch.ones_like(sigma)


def sds_loss(denoiser: Denoiser, x: Tensor, generator: torch.Generator, cond: Cond | None = None, *,
             t_range: tuple[float, float] = (0.02, 0.98), weighting: SDSWeighting = "dreamfusion",
             grad_clip: float | None = None, group: int = 1) -> tuple[Tensor, DistillInfo]:
    """SDS: grad_x = w(t) (eps_hat(x_t, t) - eps). Pass a CFGDenoiser for guided SDS."""
    t = sample_distill_time(denoiser, x.shape[0], t_range, generator, group)
    x_t, noise, sigma = _noised(denoiser, x, t, generator)
    with torch.no_grad():
        eps_hat = denoiser.predict(x_t, t, cond).eps
    grad = _expand(sds_weight(sigma, weighting), x) * (eps_hat - noise)
    grad = torch.nan_to_num(grad)
    if grad_clip is not None:
        grad = grad.clamp(-grad_clip, grad_clip)
    return _surrogate(x, grad), DistillInfo(t, float(grad.norm()))


class VSD:
    """Variational score distillation: particles follow eps_prior(x_t) - eps_lora(x_t).

    The LoRA copy of the prior learns the distribution of the current particles (optionally
    conditioned on the camera through `lora_cond`), so the gradient pushes the particle
    distribution, not each particle, towards the prior: no mode collapse, no need for huge CFG.
    """

    def __init__(self, prior: Denoiser, net: nn.Module, *, call: Callable[[nn.Module], Callable] = lambda m: m,
                 rank: int = 4, lr: float = 1e-3, guidance_scale: float = 7.5, uncond: Cond | None = None,
                 lora_cond: Callable[[Cond | None, Tensor | None], Cond | None] | None = None,
                 generator: torch.Generator | None = None):
        """`net` is the prior's module and `call(module)` turns a module into the prior's `net` callable
        (identity for gen3d's own networks, `diffusers_net` for diffusers UNets)."""
        self.prior = CFGDenoiser(prior, guidance_scale, uncond) if uncond is not None else prior
        self.lora_net, self.lora_params = lora_copy(net, rank, generator)
        self.lora = prior.with_net(call(self.lora_net))
        self.lora_cond = lora_cond or (lambda cond, camera: cond)
        self.optimizer = torch.optim.AdamW(self.lora_params, lr=lr, weight_decay=0.0)

    def loss(self, x: Tensor, generator: torch.Generator, cond: Cond | None = None, camera: Tensor | None = None, *,
             t_range: tuple[float, float] = (0.02, 0.98), weighting: SDSWeighting = "dreamfusion", group: int = 1
             ) -> tuple[Tensor, DistillInfo]:
        t = sample_distill_time(self.prior, x.shape[0], t_range, generator, group)
        x_t, _, sigma = _noised(self.prior, x, t, generator)
        with torch.no_grad():
            eps_prior = self.prior.predict(x_t, t, cond).eps
            eps_lora = self.lora.predict(x_t, t, self.lora_cond(cond, camera)).eps
        grad = torch.nan_to_num(_expand(sds_weight(sigma, weighting), x) * (eps_prior - eps_lora))
        return _surrogate(x, grad), DistillInfo(t, float(grad.norm()))

    def update_lora(self, x: Tensor, generator: torch.Generator, cond: Cond | None = None,
                    camera: Tensor | None = None, steps: int = 1, group: int = 1) -> float:
        """Fit the LoRA copy to the current particles with the ordinary diffusion loss."""
        value = 0.0
        for _ in range(steps):
            loss = diffusion_loss(self.lora, x.detach(), generator, self.lora_cond(cond, camera), group=group)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            value = float(loss.detach())
        return value
