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

from gen3d.models.autoencoder import decode_thumbnail, from_model_space, to_model_space
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
    """What the upsampler sees at sampling time for target images `rgba` (V, 4, H, W): the
    autoencoder's model-space 64 px decoding of their 16x16 latents (the images area-pooled), with
    Gaussian noise of std `latent_noise` (relative to the latent std) added to the latents."""
    thumb = F.avg_pool2d(to_model_space(rgba), 4 * rgba.shape[-1] // 64)
    noise = torch.randn(thumb.shape, generator=generator, dtype=thumb.dtype)
    with torch.no_grad():
        return decode_thumbnail(ae, thumb + noise * latent_noise / ae.config.scaling_factor)


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
        target = to_model_space(rgba)
        weights = torch.tensor([1.0, 1.0, 1.0, self.alpha_weight], device=rgba.device).view(1, 4, 1, 1)
        return (((pred - target).abs() + (pred - target) ** 2) * weights).mean()


@torch.no_grad()
def upsampling_metrics(net: ViewUpsampler | None, ae: AutoencoderKL, rgba: Tensor) -> dict:
    """PSNR (RGB over white) and alpha>0.5 IoU against 128 px renders of the upsampled decoding of
    their latents (no noise); `net=None` scores plain bilinear upsampling, the baseline."""
    decoded = decoded_inputs(ae, rgba, 0.0, torch.Generator().manual_seed(0))
    model_space = net(decoded) if net is not None else F.interpolate(decoded, size=rgba.shape[-2:], mode="bilinear",
                                                                     align_corners=False)
    pred = from_model_space(model_space)
    over_white = lambda im: im[:, :3] * im[:, 3:] + (1 - im[:, 3:])
    mse = ((over_white(pred) - over_white(rgba)) ** 2).mean()
    true, got = rgba[:, 3] > 0.5, pred[:, 3] > 0.5
    iou = (true & got).sum() / (true | got).sum().clamp(min=1)
    return {"psnr": float(-10 * torch.log10(mse)), "alpha_iou": float(iou)}
