"""The bundled prior's per-view upsampler: a decoded 64 px view -> the same view at 128 px.

The multi-view denoiser works on 16x16 latents, so its decoder gives 64 px views; generating
32x32 latents would cost four times the attention tokens on this CPU. Instead a small
convolutional network, trained on ShapeWorld renders at 128 px, maps each decoded view to twice
its size (the last stage of cascaded diffusion models, here a deterministic regressor: there is
little left to invent at this scale, and a regressor adds no randomness that could make views
disagree). It works per view, so the views stay exactly as consistent as the set it is given.

Its input is what it sees at sampling time: the decoder's output from (slightly noisy) latents,
not a clean downscaled render, so it learns to undo the decoder's blur as well as to add pixels.
Images are in the autoencoder's model space ((RGB over white, alpha) in [-1, 1]) and the network
predicts the residual from bilinear upsampling (zero-initialised: it starts as plain bilinear).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen3d.models.autoencoder import (
    from_model_space,
    image_scores,
    model_space_loss,
    noisy_decoding,
    to_model_space,
)
from gen3d.models.pretrained import load_folder, save_folder

if TYPE_CHECKING:
    from diffusers import AutoencoderKL


@dataclass
class UpsamplerConfig:
    channels: int = 32
    blocks: int = 6  # residual blocks at the input resolution
    scale: int = 2


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(x)))


class ViewUpsampler(nn.Module):
    """Model-space views (V, 4, h, w) -> (V, 4, scale*h, scale*w)."""

    def __init__(self, cfg: UpsamplerConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.head = nn.Conv2d(4, c, 3, padding=1)
        self.body = nn.Sequential(*[_Residual(c) for _ in range(cfg.blocks)])
        self.tail = nn.Conv2d(c, 4 * cfg.scale**2, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: Tensor) -> Tensor:
        up = F.interpolate(x, scale_factor=self.cfg.scale, mode="bilinear", align_corners=False)
        return up + F.pixel_shuffle(self.tail(self.body(self.head(x))), self.cfg.scale)

    def upsample_rgba(self, rgba: Tensor) -> Tensor:
        """Straight RGBA in [0, 1] at (h, w) -> straight RGBA at (scale*h, scale*w)."""
        return from_model_space(self(to_model_space(rgba)))

    def save_pretrained(self, folder: Path, dtype: torch.dtype = torch.float32) -> None:
        save_folder(self, self.cfg, folder, dtype)

    @classmethod
    def from_pretrained(cls, folder: Path) -> ViewUpsampler:
        return load_folder(folder, cls, UpsamplerConfig, "upsampler")


def decoded_inputs(ae: AutoencoderKL, rgba: Tensor, latent_noise: float, generator: torch.Generator) -> Tensor:
    """What the upsampler sees at sampling time for target images `rgba` (V, 4, H, W): the frozen
    autoencoder's 64 px decoding of their latents with noise of std `latent_noise` added."""
    with torch.no_grad():
        return noisy_decoding(ae, to_model_space(rgba), latent_noise, generator)


class UpsamplingObjective(nn.Module):
    """The upsampler's training loss as a module (DistributedDataParallel wraps it): L1 + MSE in
    model space against the 128 px render, alpha counted `alpha_weight` times, from the frozen
    decoder's output for latents perturbed by noise of a random std up to `latent_noise`."""

    def __init__(self, net: ViewUpsampler, ae: AutoencoderKL, latent_noise: float, alpha_weight: float):
        super().__init__()
        self.net, self.latent_noise, self.alpha_weight = net, latent_noise, alpha_weight
        self.ae = [ae.eval().requires_grad_(False)]  # a list: not a submodule (frozen, not saved)

    def forward(self, rgba: Tensor, generator: torch.Generator) -> Tensor:
        noise = float(torch.rand((), generator=generator)) * self.latent_noise
        pred = self.net(decoded_inputs(self.ae[0], rgba, noise, generator))
        return model_space_loss(pred, to_model_space(rgba), self.alpha_weight)


@torch.no_grad()
def upsampling_metrics(net: ViewUpsampler | None, ae: AutoencoderKL, rgba: Tensor) -> dict:
    """PSNR (RGB over white) and alpha>0.5 IoU against 128 px renders of the upsampled decoding of
    their latents (no noise); `net=None` scores plain bilinear upsampling, the baseline."""
    decoded = decoded_inputs(ae, rgba, 0.0, torch.Generator().manual_seed(0))
    model_space = net(decoded) if net is not None else F.interpolate(decoded, size=rgba.shape[-2:], mode="bilinear",
                                                                     align_corners=False)
    return image_scores(from_model_space(model_space), rgba)
