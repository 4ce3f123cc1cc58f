"""gen3d's samplers agree with diffusers' schedulers on a random non-linear network.

Single steps from identical inputs agree within 1e-6; whole 10- and 50-step trajectories within 1e-4.
States are compared in the variance-preserving parameterisation (unit scale), where diffusers keeps
its own DDIM and DPM-Solver states. Single steps evaluate gen3d's update in float64 from diffusers'
float32 inputs, so the comparison measures the update rule, not two float32 rounding orders.
"""

import math

import pytest
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, HeunDiscreteScheduler)
from torch import nn

from gen3d.diffusion import Denoiser, DiscreteSchedule, FlowSchedule, make_steps
from gen3d.diffusion.denoiser import ve_x0
from gen3d.diffusion.samplers import (ancestral_step, dpmpp_2m_step, euler_step, flow_euler_step, sample_ancestral,
                                      sample_ddim, sample_dpmpp_2m, sample_euler, sample_flow_euler, sample_heun)

SHAPE = (3, 4, 6, 6)
SCHEDULE_KW = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


class RandomNet(nn.Module):
    """A fixed random two-layer network with sinusoidal time features: smooth but far from linear."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        dim = math.prod(SHAPE[1:])
        self.w1 = nn.Parameter(torch.randn(dim + 16, 96, generator=g) / (dim + 16) ** 0.5)
        self.w2 = nn.Parameter(torch.randn(96, dim, generator=g) / 96**0.5)

    def forward(self, x, t, **_):
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        freqs = torch.exp(-math.log(1000.0) * torch.arange(8) / 8)
        temb = torch.cat([(t[:, None] * freqs).sin(), (t[:, None] * freqs).cos()], -1)
        h = torch.tanh(torch.cat([x.flatten(1), temb], -1) @ self.w1)
        return (h @ self.w2).view_as(x) + 0.3 * torch.sin(2 * x)


@pytest.fixture(scope="module")
def net():
    return RandomNet().eval()


def vp(x_ve, sigma):
    return x_ve / (sigma**2 + 1) ** 0.5


def close(mine, ref, tol):
    """Within `tol` absolutely and relatively (torch.allclose with rtol = atol = tol)."""
    return torch.allclose(mine.double(), ref.double(), rtol=tol, atol=tol)


def noise():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))


def recorder():
    states = []
    return states, lambda i, x, d: states.append(x.clone())


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("n", [10, 50])
def test_ddim_trajectory(net, prediction, spacing, n):
    sched = DDIMScheduler(**SCHEDULE_KW, prediction_type=prediction, timestep_spacing=spacing, clip_sample=False)
    sched.set_timesteps(n)
    ours = DiscreteSchedule(**SCHEDULE_KW)
    steps = make_steps(ours, n, spacing)
    assert torch.equal(steps.timesteps.long(), sched.timesteps)
    den = Denoiser(net, ours, "epsilon" if prediction == "epsilon" else "v")

    x_ref, ref_states = noise(), []
    with torch.no_grad():
        for t in sched.timesteps:
            x_ref = sched.step(net(x_ref, t), t, x_ref).prev_sample
            ref_states.append(x_ref)
        states, cb = recorder()
        x0 = ours.initial_state(noise(), steps.sigmas[0].float())
        sample_ddim(den, x0, steps, callback=cb)
    for i, (mine, ref) in enumerate(zip(states, ref_states)):
        assert close(vp(mine, steps.sigmas[i + 1].float()), ref, 1e-4), f"step {i}"


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_single_step(net, prediction):
    sched = DDIMScheduler(**SCHEDULE_KW, prediction_type=prediction, clip_sample=False)
    sched.set_timesteps(10)
    ours = DiscreteSchedule(**SCHEDULE_KW)
    steps = make_steps(ours, 10, "leading")
    pred = "epsilon" if prediction == "epsilon" else "v"
    x = noise() * 0.7
    for i, t in enumerate(sched.timesteps):
        out = net(x, t)
        ref = sched.step(out, t, x).prev_sample
        sigma, sigma_next = steps.sigmas[i], steps.sigmas[i + 1]
        x_ve = x.double() * (sigma**2 + 1) ** 0.5
        mine = ancestral_step(x_ve, ve_x0(out.double(), x_ve, sigma, pred), sigma, sigma_next, 0.0, None)
        assert close(vp(mine, sigma_next), ref, 1e-6), f"step {i}"


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("n", [10, 50])
def test_euler_trajectory(net, prediction, spacing, n):
    sched = EulerDiscreteScheduler(**SCHEDULE_KW, prediction_type=prediction, timestep_spacing=spacing)
    sched.set_timesteps(n)
    ours = DiscreteSchedule(**SCHEDULE_KW)
    steps = make_steps(ours, n, spacing)
    assert torch.allclose(steps.timesteps.float(), sched.timesteps, atol=1e-4)
    assert torch.allclose(steps.sigmas.float(), sched.sigmas, rtol=1e-6, atol=1e-7)
    den = Denoiser(net, ours, "epsilon" if prediction == "epsilon" else "v")
    x_init = noise() * sched.init_noise_sigma
    x_ref, ref_states = x_init.clone(), []
    with torch.no_grad():
        for t in sched.timesteps:
            x_ref = sched.step(net(sched.scale_model_input(x_ref, t), t), t, x_ref).prev_sample
            ref_states.append(x_ref)
        states, cb = recorder()
        sample_euler(den, x_init.clone(), steps, callback=cb)
    for i, (mine, ref) in enumerate(zip(states, ref_states)):
        s = sched.sigmas[i + 1]
        assert close(vp(mine, s), vp(ref, s), 1e-4), f"step {i}"


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_euler_single_step(net, prediction):
    sched = EulerDiscreteScheduler(**SCHEDULE_KW, prediction_type=prediction)
    sched.set_timesteps(10)
    pred = "epsilon" if prediction == "epsilon" else "v"
    x = noise() * 3.0
    for i, t in enumerate(sched.timesteps):
        out = net(sched.scale_model_input(x, t), t)
        ref = sched.step(out, t, x).prev_sample
        sigma, sigma_next = sched.sigmas[i].double(), sched.sigmas[i + 1].double()
        mine = euler_step(x.double(), ve_x0(out.double(), x.double(), sigma, pred), sigma, sigma_next)
        assert close(vp(mine, sigma_next), vp(ref, sigma_next), 1e-6), f"step {i}"
        x = ref


@pytest.mark.parametrize("n", [10, 50])
def test_euler_ancestral_trajectory_same_noise(net, n):
    sched = EulerAncestralDiscreteScheduler(**SCHEDULE_KW, prediction_type="epsilon", timestep_spacing="trailing")
    sched.set_timesteps(n)
    ours = DiscreteSchedule(**SCHEDULE_KW)
    steps = make_steps(ours, n, "trailing")
    den = Denoiser(net, ours, "epsilon")
    x_init = noise() * sched.init_noise_sigma
    g_ref, g_ours = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x_ref = x_init.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x_ref = sched.step(net(sched.scale_model_input(x_ref, t), t), t, x_ref, generator=g_ref).prev_sample
        mine = sample_ancestral(den, x_init.clone(), steps, generator=g_ours)
    assert close(mine, x_ref, 1e-4)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("n", [10, 50])
def test_heun_trajectory(net, prediction, n):
    sched = HeunDiscreteScheduler(**SCHEDULE_KW, prediction_type=prediction, timestep_spacing="linspace")
    sched.set_timesteps(n)
    ours = DiscreteSchedule(**SCHEDULE_KW)
    steps = make_steps(ours, n, "linspace")
    den = Denoiser(net, ours, "epsilon" if prediction == "epsilon" else "v")
    x_init = noise() * sched.init_noise_sigma
    x_ref = x_init.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x_ref = sched.step(net(sched.scale_model_input(x_ref, t), t), t, x_ref).prev_sample
        mine = sample_heun(den, x_init.clone(), steps)
    assert close(mine, x_ref, 1e-4)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("karras", [True, False])
@pytest.mark.parametrize("n", [10, 50])
def test_dpmpp_2m_trajectory(net, prediction, karras, n):
    sched = DPMSolverMultistepScheduler(**SCHEDULE_KW, prediction_type=prediction, use_karras_sigmas=karras,
                                        timestep_spacing="trailing", algorithm_type="dpmsolver++", solver_order=2)
    sched.set_timesteps(n)
    ours = DiscreteSchedule(**SCHEDULE_KW)
    steps = make_steps(ours, n, "karras" if karras else "trailing", quantize=True)
    assert torch.equal(steps.timesteps.long(), sched.timesteps.long())
    assert torch.allclose(steps.sigmas.float(), sched.sigmas, rtol=1e-5)
    den = Denoiser(net, ours, "epsilon" if prediction == "epsilon" else "v")
    x_ref, ref_states = noise(), []
    with torch.no_grad():
        for t in sched.timesteps:
            x_ref = sched.step(net(x_ref, t), t, x_ref).prev_sample
            ref_states.append(x_ref)
        states, cb = recorder()
        sample_dpmpp_2m(den, ours.initial_state(noise(), steps.sigmas[0].float()), steps, callback=cb)
    for i, (mine, ref) in enumerate(zip(states, ref_states)):
        assert close(vp(mine, steps.sigmas[i + 1].float()), ref, 1e-4), f"step {i}"


def test_dpmpp_2m_single_steps(net):
    sched = DPMSolverMultistepScheduler(**SCHEDULE_KW, use_karras_sigmas=True, algorithm_type="dpmsolver++")
    sched.set_timesteps(10)
    x, old = noise(), None
    for i, t in enumerate(sched.timesteps):
        out = net(x, t)
        ref = sched.step(out, t, x).prev_sample
        sigmas = sched.sigmas.double()
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_ve = x.double() * (sigma**2 + 1) ** 0.5
        denoised = ve_x0(out.double(), x_ve, sigma, "epsilon")
        sigma_prev = sigmas[i - 1] if i > 0 else None
        mine = dpmpp_2m_step(x_ve, denoised, old, sigma_prev, sigma, sigma_next)
        assert close(vp(mine, sigma_next), ref, 1e-6), f"step {i}"
        x, old = ref, denoised


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("n", [10, 50])
def test_flow_euler_trajectory_and_steps(net, shift, n):
    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(n)
    ours = FlowSchedule(shift=shift)
    steps = make_steps(ours, n)
    assert torch.allclose(steps.sigmas.float(), sched.sigmas, atol=1e-6)
    den = Denoiser(net, ours, "flow")
    x_ref, ref_states = noise(), []
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            out = net(x_ref, t)
            single = flow_euler_step(x_ref.double(), out.double(), sched.sigmas[i].double(), sched.sigmas[i + 1].double())
            x_ref = sched.step(out, t, x_ref).prev_sample
            assert close(single, x_ref, 1e-6)
            ref_states.append(x_ref)
        states, cb = recorder()
        sample_flow_euler(den, noise(), steps, callback=cb)
    for i, (mine, ref) in enumerate(zip(states, ref_states)):
        assert close(mine, ref, 1e-4), f"step {i}"
