"""A 2-D world for checking the core end to end in seconds: a mixture of 8 Gaussians on a circle.

Used by the tests, `gen3d bench samplers` and the sampler demo. The metrics (mode masses,
sliced Wasserstein distance) say whether a sampler reproduces the distribution, not just
whether it runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gen3d.diffusion.denoiser import Denoiser
from gen3d.diffusion.losses import diffusion_loss
from gen3d.diffusion.schedules import DiscreteSchedule, FlowSchedule, NoiseSchedule


@dataclass(frozen=True)
class Mixture:
    modes: int = 8
    radius: float = 2.0
    std: float = 0.2

    def centers(self) -> Tensor:
        angle = torch.arange(self.modes, dtype=torch.float32) * (2 * math.pi / self.modes)
        return self.radius * torch.stack([angle.cos(), angle.sin()], -1)

    def sample(self, n: int, generator: torch.Generator, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if labels is None:
            labels = torch.randint(0, self.modes, (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator) * self.std
        return self.centers()[labels] + noise, labels


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of the (model) time, as in transformer position encodings."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], -1)


class ToyNet(nn.Module):
    """MLP over (x, time features, label embedding); label index `modes` means "no label" (for CFG)."""

    def __init__(self, modes: int = 8, hidden: int = 128, time_dim: int = 64, time_scale: float = 1.0):
        super().__init__()
        self.time_dim, self.time_scale, self.null_label = time_dim, time_scale, modes
        self.label = nn.Embedding(modes + 1, hidden)
        self.register_buffer("freqs", 2.0 ** torch.arange(4, dtype=torch.float32), persistent=False)
        self.inp = nn.Linear(2 + 16 + time_dim, hidden)
        self.blocks = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(3)])
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: Tensor, t: Tensor, label: Tensor | None = None) -> Tensor:
        if label is None:
            label = torch.full((x.shape[0],), self.null_label, dtype=torch.long)
        # Fourier features of x let a small MLP resolve the narrow modes at low noise.
        xf = (x[..., None] * self.freqs).flatten(1)
        feats = [x, xf.sin(), xf.cos(), timestep_embedding(t * self.time_scale, self.time_dim)]
        h = self.inp(torch.cat(feats, -1)) + self.label(label)
        for block in self.blocks:
            h = h + block(nn.functional.silu(h))
        return self.out(nn.functional.silu(h))


def toy_denoiser(schedule: NoiseSchedule | None = None, prediction: str = "v", seed: int = 0) -> Denoiser:
    schedule = schedule or DiscreteSchedule("linear")
    torch.manual_seed(seed)  # module initialisation draws from the global generator
    time_scale = 1000.0 / schedule.num_train_timesteps if isinstance(schedule, FlowSchedule) else 1.0
    return Denoiser(ToyNet(time_scale=time_scale), schedule, prediction)


def train_toy(denoiser: Denoiser, mixture: Mixture = Mixture(), *, steps: int = 3000, batch: int = 1024,
              lr: float = 3e-3, label_drop: float = 0.5, seed: int = 0) -> Denoiser:
    """Fit the toy denoiser (labels dropped half the time: the unconditional model is what the samplers are judged on, the conditional one serves CFG)."""
    g = torch.Generator().manual_seed(seed)
    net = denoiser.net
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    null = torch.full((1,), net.null_label, dtype=torch.long)
    for _ in range(steps):
        x0, labels = mixture.sample(batch, g)
        loss = diffusion_loss(denoiser, x0, g, {"label": labels}, uncond={"label": null}, cond_drop_prob=label_drop)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return denoiser


def sliced_wasserstein(a: Tensor, b: Tensor, generator: torch.Generator, projections: int = 256) -> float:
    """Mean 1-Wasserstein distance between the 1-D projections of two equal-size point sets."""
    if a.shape != b.shape:
        raise ValueError("sliced_wasserstein needs equal-size sets")
    dirs = torch.randn(a.shape[1], projections, generator=generator)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a.float() @ dirs, dim=0)
    pb, _ = torch.sort(b.float() @ dirs, dim=0)
    return float((pa - pb).abs().mean())


def mode_masses(points: Tensor, mixture: Mixture = Mixture()) -> Tensor:
    """Fraction of points nearest to each mode centre."""
    nearest = torch.cdist(points.float(), mixture.centers()).argmin(dim=1)
    return torch.bincount(nearest, minlength=mixture.modes).float() / len(points)


def distance_to_modes(points: Tensor, mixture: Mixture = Mixture()) -> Tensor:
    """Distance of each point to its nearest mode centre (the spread a sampler must reproduce)."""
    return torch.cdist(points.float(), mixture.centers()).min(dim=1).values
