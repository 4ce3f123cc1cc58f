"""The Denoiser: any network plus its prediction type, on a noise schedule.

Everything downstream (samplers, guidance, training losses, score distillation) talks to a
Denoiser, never to a network directly, so a new network only needs a `net(x, t, **cond)` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from gen3d.diffusion.schedules import NoiseSchedule

Prediction = Literal["epsilon", "x0", "v", "flow"]
Cond = dict[str, Any]


def _expand(c: Tensor, like: Tensor) -> Tensor:
    """A per-sample (B,) or scalar coefficient broadcast against `like` (B, ...)."""
    c = c.to(like.dtype)
    if c.ndim == 0:
        return c
    return c.reshape(c.shape[0], *([1] * (like.ndim - 1)))


@dataclass
class Estimate:
    """The network's belief about the clean sample and the noise in x_t."""

    x0: Tensor
    eps: Tensor


def output_to_estimate(output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, prediction: Prediction) -> Estimate:
    """Convert a raw network output to (x0, eps) for x_t = alpha x0 + sigma eps.

    v = alpha eps - sigma x0 (Salimans & Ho); flow velocity u = eps - x0 (rectified flow, alpha = 1 - sigma).
    """
    a, s = _expand(alpha, x_t), _expand(sigma, x_t)
    if prediction == "epsilon":
        return Estimate((x_t - s * output) / a, output)
    if prediction == "x0":
        return Estimate(output, (x_t - a * output) / s)
    if prediction == "v":
        norm = a**2 + s**2
        return Estimate((a * x_t - s * output) / norm, (s * x_t + a * output) / norm)
    if prediction == "flow":
        return Estimate(x_t - s * output, x_t + a * output)
    raise ValueError(f"unknown prediction type '{prediction}'")


def estimate_to_target(x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, prediction: Prediction) -> Tensor:
    """The regression target a network of this prediction type is trained towards."""
    a, s = _expand(alpha, x0), _expand(sigma, x0)
    if prediction == "epsilon":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return a * eps - s * x0
    if prediction == "flow":
        return eps - x0
    raise ValueError(f"unknown prediction type '{prediction}'")


class Denoiser:
    """Wraps `net(x_t, model_time, **cond) -> output` with its schedule and prediction type.

    `t` passed to the methods is the schedule's native time, one value or one per sample.
    """

    def __init__(self, net: Callable[..., Tensor], schedule: NoiseSchedule, prediction: Prediction):
        self.net = net
        self.schedule = schedule
        self.prediction = prediction

    def _per_sample(self, t, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return t.expand(x.shape[0]) if t.ndim == 0 else t

    def output(self, x_t: Tensor, t, cond: Cond | None = None) -> Tensor:
        """The raw network output (what guidance combines)."""
        t = self._per_sample(t, x_t)
        model_t = self.schedule.model_time(t).to(device=x_t.device, dtype=x_t.dtype)
        return self.net(x_t, model_t, **(cond or {}))

    def predict(self, x_t: Tensor, t, cond: Cond | None = None) -> Estimate:
        t = self._per_sample(t, x_t)
        alpha, sigma = self.schedule.alpha_sigma(t)
        return output_to_estimate(self.output(x_t, t, cond), x_t, alpha.to(x_t), sigma.to(x_t), self.prediction)

    def score(self, x_t: Tensor, t, cond: Cond | None = None) -> Tensor:
        """grad log p_t(x_t) = -eps / sigma."""
        t = self._per_sample(t, x_t)
        _, sigma = self.schedule.alpha_sigma(t)
        return -self.predict(x_t, t, cond).eps / _expand(sigma.to(x_t), x_t)

    def denoise_ve(self, x: Tensor, sigma_ve, t, cond: Cond | None = None) -> Tensor:
        """k-diffusion view: `x = x_t / alpha` has noise level `sigma_ve`; returns the x0 estimate.

        The network sees x_t = alpha x (for variance-preserving schedules x / sqrt(1 + sigma^2), as
        diffusers' `scale_model_input` computes it).
        """
        sig = _expand(torch.as_tensor(sigma_ve, dtype=torch.float64).to(x.dtype), x)
        out = self.output(self.schedule.scale_input(x, sig), t, cond)
        return ve_x0(out, x, sig, self.prediction)

    def with_net(self, net: Callable[..., Tensor]) -> "Denoiser":
        return type(self)(net, self.schedule, self.prediction)


def ve_x0(output: Tensor, x: Tensor, sigma: Tensor, prediction: Prediction) -> Tensor:
    """x0 from a network output, given the k-diffusion state x (= x_t / alpha) at noise level sigma.

    Written the way diffusers' Euler-family schedulers write it, so both round alike.
    """
    if prediction == "epsilon":
        return x - sigma * output
    if prediction == "v":
        return output * (-sigma / (sigma**2 + 1) ** 0.5) + (x / (sigma**2 + 1))
    if prediction == "x0":
        return output
    if prediction == "flow":  # x_t = x / (1 + sigma), flow time sigma / (1 + sigma)
        return (x - sigma * output) / (1 + sigma)
    raise ValueError(f"unknown prediction type '{prediction}'")


def diffusers_net(unet: torch.nn.Module) -> Callable[..., Tensor]:
    """Adapter for diffusers-style networks: `unet(x, t, encoder_hidden_states=..., ...).sample`."""

    def call(x: Tensor, t: Tensor, **cond) -> Tensor:
        out = unet(x, t, **cond)
        return out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out

    return call
