"""`gen3d bench samplers`: distribution quality per sampler and step count on the 2-D toy, and
gen3d's sampling-loop time over diffusers' scheduler loop on the same denoiser, in one run."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler,
                       HeunDiscreteScheduler)

from gen3d.diffusion import FlowSchedule, sample
from gen3d.diffusion.toy import Mixture, sliced_wasserstein, toy_denoiser, train_toy

N_SAMPLES = 10_000
SCHEDULE = dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)


def diffusers_scheduler(name: str):
    """The diffusers scheduler matching each gen3d sampler's default configuration."""
    return {
        "ddpm": lambda: DDPMScheduler(**SCHEDULE, prediction_type="v_prediction", timestep_spacing="trailing"),
        "ddim": lambda: DDIMScheduler(**SCHEDULE, prediction_type="v_prediction", timestep_spacing="trailing"),
        "euler": lambda: EulerDiscreteScheduler(**SCHEDULE, prediction_type="v_prediction", timestep_spacing="trailing"),
        "euler_a": lambda: EulerAncestralDiscreteScheduler(**SCHEDULE, prediction_type="v_prediction",
                                                           timestep_spacing="trailing"),
        "heun": lambda: HeunDiscreteScheduler(**SCHEDULE, prediction_type="v_prediction", timestep_spacing="trailing"),
        "dpmpp_2m": lambda: DPMSolverMultistepScheduler(**SCHEDULE, prediction_type="v_prediction",
                                                        use_karras_sigmas=True),
        "flow_euler": lambda: FlowMatchEulerDiscreteScheduler(),
        "flow_heun": lambda: FlowMatchHeunDiscreteScheduler(),
    }[name]()


def diffusers_loop(name: str, net, steps: int, generator: torch.Generator) -> torch.Tensor:
    sched = diffusers_scheduler(name)
    sched.set_timesteps(steps)
    x = torch.randn(N_SAMPLES, 2, generator=generator) * getattr(sched, "init_noise_sigma", 1.0)
    with torch.no_grad():
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
            out = net(inp, t.float().expand(N_SAMPLES))
            kwargs = {"generator": generator} if name in ("ddpm", "euler_a") else {}
            x = sched.step(out, t, x, **kwargs).prev_sample
    return x


def _timed(fn) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(quick: bool = False, out_dir: Path | None = None) -> list[dict]:
    mixture = Mixture()
    train_steps = 1500 if quick else 3000
    models = {"diffusion": train_toy(toy_denoiser(prediction="v"), steps=train_steps),
              "flow": train_toy(toy_denoiser(FlowSchedule(), prediction="flow"), steps=train_steps)}
    g = torch.Generator().manual_seed(1)
    reference, _ = mixture.sample(N_SAMPLES, g)
    floor = sliced_wasserstein(reference, mixture.sample(N_SAMPLES, g)[0], torch.Generator().manual_seed(5))
    step_counts = [10, 20] if quick else [5, 10, 20, 50, 100]
    rows = []
    for name in ["ddpm", "ddim", "euler", "euler_a", "heun", "dpmpp_2m", "flow_euler", "flow_heun"]:
        denoiser = models["flow" if name.startswith("flow") else "diffusion"]
        for steps in step_counts:
            ours, t_ours = _timed(lambda: sample(denoiser, (N_SAMPLES, 2), sampler=name, num_steps=steps,
                                                  generator=torch.Generator().manual_seed(2)))
            _, t_ref = _timed(lambda: diffusers_loop(name, denoiser.net, steps, torch.Generator().manual_seed(2)))
            rows.append({"sampler": name, "steps": steps,
                         "swd": sliced_wasserstein(ours, reference, torch.Generator().manual_seed(5)),
                         "swd_data_floor": floor, "time_ratio_vs_diffusers": t_ours / t_ref})
    return rows
