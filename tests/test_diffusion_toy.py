"""The core on a 2-D toy: a mixture of 8 Gaussians learned in seconds.

Checks that every sampler reproduces the distribution (mode masses, sliced Wasserstein distance
against the data's own two-sample floor), that CFG steers to a mode, that SDS collapses
particles while VSD keeps the distribution, and that DPS solves an inverse problem.
"""

import pytest
import torch

from gen3d.diffusion import CFGDenoiser, DPSDenoiser, FlowSchedule, USUAL_STEPS, VSD, anneal_t_range, sample, sds_loss
from gen3d.diffusion.toy import Mixture, distance_to_modes, mode_masses, sliced_wasserstein, toy_denoiser, train_toy

MIX = Mixture()
N = 10_000


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The toy's small matrices gain nothing from a second thread, and a busy machine makes it spin."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def diffusion_toy():
    return train_toy(toy_denoiser(prediction="v"))


@pytest.fixture(scope="module")
def flow_toy():
    return train_toy(toy_denoiser(FlowSchedule(), prediction="flow"))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    a, _ = MIX.sample(N, g)
    b, _ = MIX.sample(N, g)
    floor = sliced_wasserstein(a, b, torch.Generator().manual_seed(5))
    return a, floor


def within_cluster_std(points):
    nearest = torch.cdist(points.float(), MIX.centers()).argmin(1)
    return torch.stack([points[nearest == k].std(0).mean() for k in range(MIX.modes) if (nearest == k).sum() > 2]).mean()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler", "euler_a", "heun", "dpmpp_2m", "flow_euler", "flow_heun"])
def test_sampler_reproduces_mixture(sampler, diffusion_toy, flow_toy, data):
    denoiser = flow_toy if sampler.startswith("flow") else diffusion_toy
    samples = sample(denoiser, (N, 2), sampler=sampler, generator=torch.Generator().manual_seed(2))
    masses = mode_masses(samples, MIX)
    assert (masses - 0.125).abs().max() <= 0.03, masses
    reference, floor = data
    swd = sliced_wasserstein(samples, reference, torch.Generator().manual_seed(5))
    assert swd <= 2 * floor, f"{sampler} at {USUAL_STEPS[sampler]} steps: SWD {swd:.4f} vs data floor {floor:.4f}"


def test_sampling_is_bit_identical_for_a_seed(diffusion_toy):
    a = sample(diffusion_toy, (256, 2), sampler="euler_a", num_steps=10, generator=torch.Generator().manual_seed(9))
    b = sample(diffusion_toy, (256, 2), sampler="euler_a", num_steps=10, generator=torch.Generator().manual_seed(9))
    c = sample(diffusion_toy, (256, 2), sampler="euler_a", num_steps=10, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("mode", [0, 5])
def test_cfg_steers_to_the_labelled_mode(diffusion_toy, mode):
    guided = CFGDenoiser(diffusion_toy, 3.0, {"label": torch.tensor([MIX.modes])})
    samples = sample(guided, (N, 2), cond={"label": torch.full((N,), mode)}, generator=torch.Generator().manual_seed(3))
    assert mode_masses(samples, MIX)[mode] >= 0.95


def test_sds_collapses_particles_onto_modes(diffusion_toy, data):
    g = torch.Generator().manual_seed(4)
    particles = (torch.randn(512, 2, generator=g) * 1.5).requires_grad_(True)
    steps = 800
    # Each particle is its own "scene": undo the loss's per-batch averaging with the learning rate.
    opt = torch.optim.SGD([particles], lr=0.1 * len(particles))
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    for _ in range(steps):
        loss, _ = sds_loss(diffusion_toy, particles, g, t_range=(0.02, 0.25), weighting="uniform")
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    final = particles.detach()
    reference, _ = data
    assert within_cluster_std(final) < 0.35 * within_cluster_std(reference)
    assert distance_to_modes(final).mean() < distance_to_modes(reference).mean()


def test_vsd_matches_mode_masses_and_spread(diffusion_toy, data):
    g = torch.Generator().manual_seed(4)
    particles = (torch.randn(512, 2, generator=g) * 1.5).requires_grad_(True)
    opt = torch.optim.Adam([particles], lr=0.02)
    vsd = VSD(diffusion_toy, diffusion_toy.net, rank=16, lr=3e-3, generator=g)
    steps = 600
    for step in range(steps):
        loss, _ = vsd.loss(particles, g, t_range=anneal_t_range(step, steps, (0.02, 0.98), (0.02, 0.5)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        vsd.update_lora(particles, g, steps=2)
    final = particles.detach()
    reference, _ = data
    assert (mode_masses(final, MIX) - 0.125).abs().max() <= 0.04
    ratio = float(within_cluster_std(final) / within_cluster_std(reference))
    assert 0.7 <= ratio <= 1.3, ratio


def test_dps_recovers_a_masked_signal(diffusion_toy):
    truth = MIX.centers()[0] + torch.tensor([0.05, -0.1])
    y = truth[:1].expand(512, 1)  # only the first coordinate is observed

    def measure(x):
        return x[:, :1]

    def error(samples):
        return float((samples - truth).norm(dim=1).mean())

    unguided = sample(diffusion_toy, (512, 2), sampler="euler", generator=torch.Generator().manual_seed(6))
    dps = DPSDenoiser(diffusion_toy, measure, y, scale=6.0)
    guided = sample(dps, (512, 2), sampler="euler", generator=torch.Generator().manual_seed(6))
    assert error(guided) < 0.25 * error(unguided)
    assert (measure(guided) - y).abs().mean() < 0.2
