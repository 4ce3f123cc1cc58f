"""Sampling step schedules: which times the network is evaluated at and which noise levels a sampler walks.

Spacings follow "Common Diffusion Noise Schedules and Sample Steps are Flawed" (Lin et al. 2023,
table 2), with diffusers' definitions:

* ``leading``:  t_i = i * (T // n) + offset, descending
* ``trailing``: t_i = round(T - i * T / n) - 1, descending (always starts at the last timestep)
* ``linspace``: n evenly spaced (fractional) times from T - 1 down to 0
* ``karras``: EDM noise levels between the schedule's extremes, mapped back to times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from gen3d.diffusion.schedules import DiscreteSchedule, EDMSchedule, FlowSchedule, NoiseSchedule, karras_sigmas

Spacing = Literal["leading", "trailing", "linspace", "karras"]


@dataclass
class Steps:
    """`timesteps` (n): native times at which the network is evaluated.

    `sigmas` (n + 1): the noise coordinate the sampler integrates over, ending at the clean end: the
    k-diffusion sigma (noise level of x / alpha) for diffusion schedules, the flow time t for flows.
    """

    timesteps: Tensor
    sigmas: Tensor

    def __len__(self) -> int:
        return len(self.timesteps)


def spaced_timesteps(num_train_timesteps: int, n: int, spacing: str, steps_offset: int = 0) -> np.ndarray:
    T = num_train_timesteps
    if spacing == "leading":
        return (np.arange(0, n) * (T // n)).round()[::-1].astype(np.float64) + steps_offset
    if spacing == "trailing":
        return np.arange(T, 0, -T / n).round().astype(np.float64) - 1
    if spacing == "linspace":
        return np.linspace(0, T - 1, n, dtype=np.float64)[::-1].copy()
    raise ValueError(f"unknown timestep spacing '{spacing}' (choose leading, trailing, linspace or karras)")


def make_steps(schedule: NoiseSchedule, n: int, spacing: Spacing = "trailing", *,
               steps_offset: int = 0, quantize: bool = False, rho: float = 7.0) -> Steps:
    """The n-step schedule for `schedule`.

    `quantize` rounds Karras times to integers, for networks trained on integer timesteps
    (what diffusers' DPM-Solver does for non-cosine schedules).
    """
    if n < 1:
        raise ValueError("need at least one sampling step")
    if isinstance(schedule, FlowSchedule):
        t_end = float(schedule.shifted(1.0 / schedule.num_train_timesteps))
        t = schedule.shifted(torch.linspace(1.0, t_end, n, dtype=torch.float64))
        return Steps(t, torch.cat([t, t.new_zeros(1)]))
    if isinstance(schedule, EDMSchedule):
        s = karras_sigmas(n, schedule.sigma_min, schedule.sigma_max, rho)
        return Steps(s, torch.cat([s, s.new_zeros(1)]))
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"no step spacing for {type(schedule).__name__}")
    if spacing == "karras":
        sig = schedule.sigmas_ve.double()
        sigmas = karras_sigmas(n, float(sig[0]), float(sig[-1]), rho)
        t = schedule.t_from_sigma_ve(sigmas)
        if quantize:
            t = t.round()
    else:
        t = torch.from_numpy(spaced_timesteps(schedule.num_train_timesteps, n, spacing, steps_offset))
        sigmas = schedule.sigma_ve(t)
    return Steps(t, torch.cat([sigmas, sigmas.new_zeros(1)]))
