"""Samplers: small functions over a denoiser, k-diffusion style.

Each `sample_*` takes (denoiser, x, steps, cond, generator, callback) and returns the final
sample. Diffusion samplers integrate the k-diffusion state x = x_t / alpha over noise levels
`steps.sigmas`; flow samplers integrate x_t over flow time. Every update is a pure `*_step`
function so it can be checked against other implementations one step at a time.

DDIM with eta is the ancestral Euler step of k-diffusion in disguise (the two coincide exactly
in the k-diffusion parameterisation), and DDPM's ancestral sampler is DDIM with eta = 1
(its "fixed small" posterior variance), so all three share `ancestral_step`.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from gen3d.diffusion.denoiser import Cond, Denoiser
from gen3d.diffusion.steps import Steps, make_steps

Callback = Optional[Callable[[int, Tensor, Tensor], None]]  # (step index, state, x0 estimate)


# ---- pure update rules -------------------------------------------------------------------

def euler_step(x: Tensor, denoised: Tensor, sigma, sigma_next) -> Tensor:
    derivative = (x - denoised) / sigma
    return x + derivative * (sigma_next - sigma)


def ancestral_sigmas(sigma, sigma_next, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split the step to sigma_next into a deterministic part (down) and fresh noise (up)."""
    sigma, sigma_next = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
    up = torch.clamp(eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5, max=sigma_next)
    down = (sigma_next**2 - up**2) ** 0.5
    return down, up


def ancestral_step(x: Tensor, denoised: Tensor, sigma, sigma_next, eta: float, noise: Tensor) -> Tensor:
    down, up = ancestral_sigmas(sigma, sigma_next, eta)
    x = x + (x - denoised) / sigma * (down - sigma)
    return x + noise * up if eta > 0 else x


def heun_step(x: Tensor, derivative: Tensor, derivative_next: Tensor, dt) -> Tensor:
    return x + (derivative + derivative_next) / 2 * dt


def dpmpp_2m_step(x: Tensor, denoised: Tensor, old_denoised: Tensor | None, sigma_prev, sigma, sigma_next) -> Tensor:
    """DPM-Solver++(2M): second order from the previous x0 estimate; first order at the ends."""
    if sigma_next == 0:
        return denoised
    t, t_next = -torch.log(torch.as_tensor(sigma)), -torch.log(torch.as_tensor(sigma_next))
    h = t_next - t
    if old_denoised is not None:
        r = (t - (-torch.log(torch.as_tensor(sigma_prev)))) / h
        denoised = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
    return (sigma_next / sigma) * x - torch.expm1(-h) * denoised


def flow_euler_step(x: Tensor, velocity: Tensor, t, t_next) -> Tensor:
    return x + (t_next - t) * velocity


# ---- loops ----------------------------------------------------------------------------------

def _sig(steps: Steps, i: int, like: Tensor) -> Tensor:
    return steps.sigmas[i].to(like.dtype)


def sample_euler(denoiser: Denoiser, x: Tensor, steps: Steps, cond: Cond | None = None,
                 generator: torch.Generator | None = None, callback: Callback = None) -> Tensor:
    for i in range(len(steps)):
        sigma, sigma_next = _sig(steps, i, x), _sig(steps, i + 1, x)
        denoised = denoiser.denoise_ve(x, sigma, steps.timesteps[i], cond)
        x = euler_step(x, denoised, sigma, sigma_next)
        if callback:
            callback(i, x, denoised)
    return x


def sample_ancestral(denoiser: Denoiser, x: Tensor, steps: Steps, cond: Cond | None = None,
                     generator: torch.Generator | None = None, callback: Callback = None, eta: float = 1.0) -> Tensor:
    """Euler-ancestral (eta = 1), DDIM (any eta; eta = 0 is deterministic DDIM) and DDPM (eta = 1)."""
    for i in range(len(steps)):
        sigma, sigma_next = _sig(steps, i, x), _sig(steps, i + 1, x)
        denoised = denoiser.denoise_ve(x, sigma, steps.timesteps[i], cond)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device) if eta > 0 else None
        x = ancestral_step(x, denoised, sigma, sigma_next, eta, noise)
        if callback:
            callback(i, x, denoised)
    return x


def sample_ddim(denoiser: Denoiser, x: Tensor, steps: Steps, cond: Cond | None = None,
                generator: torch.Generator | None = None, callback: Callback = None, eta: float = 0.0) -> Tensor:
    return sample_ancestral(denoiser, x, steps, cond, generator, callback, eta=eta)


def sample_ddpm(denoiser: Denoiser, x: Tensor, steps: Steps, cond: Cond | None = None,
                generator: torch.Generator | None = None, callback: Callback = None) -> Tensor:
    return sample_ancestral(denoiser, x, steps, cond, generator, callback, eta=1.0)


def sample_heun(denoiser: Denoiser, x: Tensor, steps: Steps, cond: Cond | None = None,
                generator: torch.Generator | None = None, callback: Callback = None) -> Tensor:
    for i in range(len(steps)):
        sigma, sigma_next = _sig(steps, i, x), _sig(steps, i + 1, x)
        denoised = denoiser.denoise_ve(x, sigma, steps.timesteps[i], cond)
        derivative = (x - denoised) / sigma
        dt = sigma_next - sigma
        if sigma_next == 0:  # last step: Euler, no second evaluation at sigma = 0
            x = x + derivative * dt
        else:
            x_euler = x + derivative * dt
            denoised_next = denoiser.denoise_ve(x_euler, sigma_next, steps.timesteps[i + 1], cond)
            x = heun_step(x, derivative, (x_euler - denoised_next) / sigma_next, dt)
        if callback:
            callback(i, x, denoised)
    return x


def sample_dpmpp_2m(denoiser: Denoiser, x: Tensor, steps: Steps, cond: Cond | None = None,
                    generator: torch.Generator | None = None, callback: Callback = None) -> Tensor:
    old_denoised = None
    for i in range(len(steps)):
        sigma, sigma_next = _sig(steps, i, x), _sig(steps, i + 1, x)
        denoised = denoiser.denoise_ve(x, sigma, steps.timesteps[i], cond)
        sigma_prev = _sig(steps, i - 1, x) if i > 0 else None
        x = dpmpp_2m_step(x, denoised, old_denoised, sigma_prev, sigma, sigma_next)
        old_denoised = denoised
        if callback:
            callback(i, x, denoised)
    return x


def flow_velocity(denoiser: Denoiser, x: Tensor, t, cond: Cond | None) -> Tensor:
    """dx/dt of the flow ODE, u = eps - x0 (the raw output for flow-prediction networks)."""
    if denoiser.prediction == "flow":
        return denoiser.output(x, t, cond)
    est = denoiser.predict(x, t, cond)
    return est.eps - est.x0


def sample_flow_euler(denoiser: Denoiser, x: Tensor, steps: Steps, cond: Cond | None = None,
                      generator: torch.Generator | None = None, callback: Callback = None) -> Tensor:
    for i in range(len(steps)):
        t, t_next = _sig(steps, i, x), _sig(steps, i + 1, x)
        velocity = flow_velocity(denoiser, x, steps.timesteps[i], cond)
        x = flow_euler_step(x, velocity, t, t_next)
        if callback:
            callback(i, x, x - t * velocity)
    return x


def sample_flow_heun(denoiser: Denoiser, x: Tensor, steps: Steps, cond: Cond | None = None,
                     generator: torch.Generator | None = None, callback: Callback = None) -> Tensor:
    for i in range(len(steps)):
        t, t_next = _sig(steps, i, x), _sig(steps, i + 1, x)
        velocity = flow_velocity(denoiser, x, steps.timesteps[i], cond)
        x_euler = flow_euler_step(x, velocity, t, t_next)
        if t_next == 0:
            x = x_euler
        else:
            velocity_next = flow_velocity(denoiser, x_euler, steps.sigmas[i + 1], cond)
            x = heun_step(x, velocity, velocity_next, t_next - t)
        if callback:
            callback(i, x, x - t * velocity)
    return x


SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler_a": sample_ancestral,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "flow_euler": sample_flow_euler,
    "flow_heun": sample_flow_heun,
}

#: step counts each sampler is usually run at (the toy benchmark's defaults)
USUAL_STEPS = {"ddpm": 100, "ddim": 50, "euler": 50, "euler_a": 50, "heun": 25, "dpmpp_2m": 20,
               "flow_euler": 50, "flow_heun": 25}


def sample(denoiser: Denoiser, shape: tuple[int, ...], *, sampler: str = "dpmpp_2m", num_steps: int | None = None,
           spacing: str | None = None, cond: Cond | None = None, generator: torch.Generator | None = None,
           callback: Callback = None, eta: float | None = None, dtype=torch.float32, device=None) -> Tensor:
    """Draw samples from pure noise. DPM-Solver++ defaults to Karras sigmas, the rest to trailing spacing."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}'; choose one of {', '.join(SAMPLERS)}")
    num_steps = num_steps or USUAL_STEPS[sampler]
    spacing = spacing or ("karras" if sampler == "dpmpp_2m" else "trailing")
    steps = make_steps(denoiser.schedule, num_steps, spacing)
    noise = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    x = denoiser.schedule.initial_state(noise, steps.sigmas[0].to(dtype))
    kwargs = {"eta": eta} if eta is not None and sampler in ("ddim", "euler_a") else {}
    with torch.no_grad():
        return SAMPLERS[sampler](denoiser, x, steps, cond, generator, callback, **kwargs)
