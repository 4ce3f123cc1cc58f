"""Noise schedules: how much signal and noise a sample holds at time t.

Every schedule writes the noisy sample as ``x_t = alpha(t) * x0 + sigma(t) * eps`` in its own
("native") time t and exposes, at continuous or discrete t:

* ``alpha_sigma(t)`` the native coefficients,
* ``alpha_bar(t) = alpha^2 / (alpha^2 + sigma^2)``,
* ``sigma_ve(t) = sigma / alpha`` (k-diffusion's sigma: the noise level of ``x_t / alpha``),
* ``log_snr(t) = 2 log(alpha / sigma)``,
* ``model_time(t)``: what the network is fed as its timestep.

Discrete schedules (DDPM linear, Stable Diffusion's scaled-linear, improved-DDPM cosine,
optionally rescaled to zero terminal SNR) follow diffusers' float32 arithmetic so that samplers
agree with diffusers' schedulers to float precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def _as_tensor(t) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


class NoiseSchedule:
    """Base class; subclasses implement `alpha_sigma` and the time range."""

    #: native time of the clean end and of the pure-noise end
    t_min: float = 0.0
    t_max: float = 1.0

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def alpha_bar(self, t) -> Tensor:
        a, s = self.alpha_sigma(t)
        return a**2 / (a**2 + s**2)

    def sigma_ve(self, t) -> Tensor:
        a, s = self.alpha_sigma(t)
        return s / a

    def log_snr(self, t) -> Tensor:
        a, s = self.alpha_sigma(t)
        return 2 * (torch.log(a) - torch.log(s))

    def model_time(self, t) -> Tensor:
        return _as_tensor(t)

    def scale_input(self, x: Tensor, sigma_ve: Tensor) -> Tensor:
        """x_t from the k-diffusion state x = x_t / alpha at noise level sigma_ve (variance preserving here)."""
        return x / (sigma_ve**2 + 1) ** 0.5

    def initial_state(self, noise: Tensor, sigma: Tensor) -> Tensor:
        """Pure noise as the sampler state at its first noise level (x_T = eps, so x = eps / alpha)."""
        return noise * (sigma**2 + 1) ** 0.5

    def sample_time(self, n: int, generator: torch.Generator, device=None) -> Tensor:
        """Training times: uniform over the schedule's range."""
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        return self.t_min + u * (self.t_max - self.t_min)


def betas_for(kind: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    """Betas as diffusers builds them: 'linear', 'scaled_linear' (Stable Diffusion), 'squaredcos_cap_v2' (cosine)."""
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    if kind == "squaredcos_cap_v2":
        def f(x: float) -> float:
            return math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - f((i + 1) / num_train_timesteps) / f(i / num_train_timesteps), 0.999)
                 for i in range(num_train_timesteps)]
        return torch.tensor(betas, dtype=torch.float32)
    raise ValueError(f"unknown beta schedule '{kind}'")


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Shift and scale sqrt(alpha_bar) so the last step is pure noise (Lin et al. 2023)."""
    sqrt_ab = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = torch.cat([ab[0:1], ab[1:] / ab[:-1]])
    return 1 - alphas


class DiscreteSchedule(NoiseSchedule):
    """A variance-preserving DDPM schedule on integer timesteps 0..T-1 (fractional t interpolates sigma_ve).

    `alphas_cumprod` is kept in float32 exactly as diffusers computes it.
    """

    def __init__(self, beta_schedule: str = "linear", num_train_timesteps: int = 1000,
                 beta_start: float = 0.0001, beta_end: float = 0.02, zero_terminal_snr: bool = False):
        betas = betas_for(beta_schedule, num_train_timesteps, beta_start, beta_end)
        if zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.beta_schedule = beta_schedule
        self.num_train_timesteps = num_train_timesteps
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        if zero_terminal_snr:  # avoid an infinite sigma at the last step, as diffusers does
            self.alphas_cumprod[-1] = 2**-24
        self.sigmas_ve = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5  # float32
        self.log_sigmas_ve = torch.log(self.sigmas_ve.double())
        self.t_max = float(num_train_timesteps - 1)

    def sigma_ve(self, t) -> Tensor:
        t = _as_tensor(t)
        grid = torch.arange(self.num_train_timesteps, dtype=torch.float64)
        return _interp(t, grid, self.sigmas_ve.double())

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        s = self.sigma_ve(t)
        a = 1 / torch.sqrt(s**2 + 1)
        return a, s * a

    def t_from_sigma_ve(self, sigma) -> Tensor:
        """Inverse of `sigma_ve`, interpolating in log-sigma like diffusers' `_sigma_to_t`."""
        log_sigma = torch.log(torch.clamp(_as_tensor(sigma), min=1e-10))
        ls = self.log_sigmas_ve
        low = (log_sigma[..., None] >= ls).sum(-1).clamp(min=1, max=len(ls) - 1) - 1
        w = ((ls[low] - log_sigma) / (ls[low] - ls[low + 1])).clamp(0, 1)
        return (1 - w) * low + w * (low + 1)

    def sample_time(self, n: int, generator: torch.Generator, device=None) -> Tensor:
        return torch.randint(0, self.num_train_timesteps, (n,), generator=generator, device=device).double()


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """np.interp for torch (xp increasing)."""
    idx = torch.searchsorted(xp, x.clamp(xp[0], xp[-1]), right=True).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    w = (x.clamp(xp[0], xp[-1]) - x0) / (x1 - x0)
    return y0 + w * (y1 - y0)


@dataclass
class EDMSchedule(NoiseSchedule):
    """Variance-exploding EDM (Karras et al. 2022): native time is sigma itself, alpha = 1."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2

    def __post_init__(self) -> None:
        self.t_min, self.t_max = self.sigma_min, self.sigma_max

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        s = _as_tensor(t)
        return torch.ones_like(s), s

    def model_time(self, t) -> Tensor:
        return 0.25 * torch.log(_as_tensor(t))  # EDM's c_noise

    def scale_input(self, x: Tensor, sigma_ve: Tensor) -> Tensor:
        return x

    def initial_state(self, noise: Tensor, sigma: Tensor) -> Tensor:
        return noise * sigma

    def t_from_sigma_ve(self, sigma) -> Tensor:
        return _as_tensor(sigma)

    def sample_time(self, n: int, generator: torch.Generator, device=None) -> Tensor:
        """EDM's log-normal training noise levels."""
        z = torch.randn(n, generator=generator, dtype=torch.float64, device=device)
        return torch.exp(self.p_mean + self.p_std * z)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """EDM's noise levels, from sigma_max down to sigma_min, evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


@dataclass
class FlowSchedule(NoiseSchedule):
    """Rectified flow: x_t = (1 - t) x0 + t eps, t in [0, 1], with an optional timestep shift.

    `shift` > 1 spends more steps at high noise (SD3's resolution-dependent shift). The network sees
    `t * num_train_timesteps`, as diffusers' flow-matching models do.
    """

    shift: float = 1.0
    num_train_timesteps: int = 1000

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        t = _as_tensor(t)
        return 1 - t, t

    def shifted(self, t) -> Tensor:
        t = _as_tensor(t)
        return self.shift * t / (1 + (self.shift - 1) * t)

    def model_time(self, t) -> Tensor:
        return _as_tensor(t) * self.num_train_timesteps

    def scale_input(self, x: Tensor, sigma_ve: Tensor) -> Tensor:
        return x / (1 + sigma_ve)

    def initial_state(self, noise: Tensor, t: Tensor) -> Tensor:
        """Flow samplers integrate x_t itself; at t = 1 it is pure noise."""
        return noise * t

    def t_from_sigma_ve(self, sigma) -> Tensor:
        s = _as_tensor(sigma)
        return s / (1 + s)

    def sample_time(self, n: int, generator: torch.Generator, device=None) -> Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        return self.shifted(u)
