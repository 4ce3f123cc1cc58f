"""The bundled prior's latent autoencoder: RGBA 64x64 <-> 4x16x16 latents.

Images enter as (RGB composited onto white, alpha), mapped to [-1, 1]: compositing removes the
undefined colour of empty pixels (straight RGB is arbitrary where alpha = 0), and straight
colour is recovered exactly where the object is.

The encoder is fixed: a latent is that image area-averaged 4x4 to 16x16 (times
`scaling_factor` = 1 / std, measured on the training data and stored in the config). The
decoder (diffusers `AutoencoderKL`'s, with a zero-initialised output layer) learns the residual
from bilinear upsampling of the latent to the sharp 64x64 image. A learned encoder was tried
first and, in the training time available, dropped colour: a linear probe recovered the green
channel from its latents with R^2 = 0.02, and decoded yellow came out orange. The pooled
latent keeps colour by construction, and the decoder only has to sharpen. (The
AutoencoderKL's own encoder weights are unused.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # diffusers takes seconds to import: only the functions that build models load it
    from diffusers import AutoencoderKL


@dataclass
class AEConfig:
    """Architecture of the autoencoder (two downsamplings: 64 -> 16)."""

    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 8
    sample_size: int = 64


def build_autoencoder(cfg: AEConfig) -> AutoencoderKL:
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    ae = AutoencoderKL(
        in_channels=4, out_channels=4, latent_channels=cfg.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups, sample_size=cfg.sample_size, scaling_factor=1.0,
    )
    nn.init.zeros_(ae.decoder.conv_out.weight)  # start as plain bilinear upsampling
    nn.init.zeros_(ae.decoder.conv_out.bias)
    return ae


def to_model_space(rgba: Tensor) -> Tensor:
    """Straight RGBA in [0, 1] -> (RGB over white, alpha) in [-1, 1]."""
    rgb, alpha = rgba[:, :3], rgba[:, 3:]
    return torch.cat([rgb * alpha + (1 - alpha), alpha], 1) * 2 - 1


def from_model_space(x: Tensor) -> Tensor:
    """Inverse of `to_model_space`: straight RGBA in [0, 1] (white where alpha ~ 0)."""
    x = ((x + 1) / 2).clamp(0, 1)
    over_white, alpha = x[:, :3], x[:, 3:]
    rgb = (over_white - (1 - alpha)) / alpha.clamp(min=1e-3)
    rgb = torch.where(alpha > 1 / 255, rgb.clamp(0, 1), torch.ones_like(rgb))
    return torch.cat([rgb, alpha], 1)


def thumbnail(rgba: Tensor) -> Tensor:
    """The unscaled latent: model-space image area-averaged to a quarter of its size."""
    return F.avg_pool2d(to_model_space(rgba), 4)


def decode_thumbnail(ae: AutoencoderKL, thumb: Tensor) -> Tensor:
    """Model-space image (V, 4, 64, 64): bilinear upsampling plus the decoder's residual."""
    up = F.interpolate(thumb, scale_factor=4, mode="bilinear", align_corners=False)
    return up + ae.decode(thumb).sample


def encode_mean(ae: AutoencoderKL, rgba: Tensor) -> Tensor:
    """Scaled latents (V, 4, 16, 16) of straight RGBA images (V, 4, 64, 64); differentiable."""
    return thumbnail(rgba) * ae.config.scaling_factor


def decode_rgba(ae: AutoencoderKL, latents: Tensor) -> Tensor:
    """Scaled latents back to straight RGBA in [0, 1]."""
    return from_model_space(decode_thumbnail(ae, latents / ae.config.scaling_factor))


class ReconstructionObjective(nn.Module):
    """The decoder's training loss as a module (so DistributedDataParallel can wrap it): L1 + MSE
    in model space, alpha counted `alpha_weight` times, from latents perturbed by Gaussian noise
    of std `latent_noise` (relative to the latent std), so the decoder tolerates the small errors
    of generated latents. No perceptual or adversarial loss: those need downloaded networks."""

    def __init__(self, ae: AutoencoderKL, latent_noise: float, alpha_weight: float):
        super().__init__()
        self.ae, self.latent_noise, self.alpha_weight = ae, latent_noise, alpha_weight

    def forward(self, rgba: Tensor, generator: torch.Generator) -> Tensor:
        x = to_model_space(rgba)
        return model_space_loss(noisy_decoding(self.ae, x, self.latent_noise, generator), x, self.alpha_weight)


def noisy_decoding(ae: AutoencoderKL, x: Tensor, latent_noise: float, generator: torch.Generator) -> Tensor:
    """The decoder's 64 px model-space output for model-space images `x` (any multiple of 16 on a
    side) pooled to their 16x16 latents, plus Gaussian noise of std `latent_noise` (relative to the
    latent std): what the decoder meets in generated latents."""
    thumb = F.avg_pool2d(x, x.shape[-1] // 16)
    noise = torch.randn(thumb.shape, generator=generator, dtype=thumb.dtype)
    return decode_thumbnail(ae, thumb + noise * latent_noise / ae.config.scaling_factor)


def model_space_loss(pred: Tensor, target: Tensor, alpha_weight: float) -> Tensor:
    """L1 + MSE between model-space images, the alpha channel counted `alpha_weight` times."""
    weights = torch.tensor([1.0, 1.0, 1.0, alpha_weight], device=target.device).view(1, 4, 1, 1)
    return (((pred - target).abs() + (pred - target) ** 2) * weights).mean()


def image_scores(pred: Tensor, truth: Tensor) -> dict:
    """PSNR of RGB composited over white and IoU of the alpha > 0.5 masks, straight RGBA images."""
    over_white = lambda im: im[:, :3] * im[:, 3:] + (1 - im[:, 3:])
    mse = ((over_white(pred) - over_white(truth)) ** 2).mean()
    true, got = truth[:, 3] > 0.5, pred[:, 3] > 0.5
    iou = (true & got).sum() / (true | got).sum().clamp(min=1)
    return {"psnr": float(-10 * torch.log10(mse)), "alpha_iou": float(iou)}


@torch.no_grad()
def measure_scaling_factor(ae: AutoencoderKL, images: Tensor, batch: int = 64) -> float:
    """1 / std of the unscaled latents of `images`, so the diffusion sees unit-variance data."""
    return float(1.0 / torch.cat([thumbnail(images[i:i + batch]) for i in range(0, len(images), batch)]).std())


@torch.no_grad()
def reconstruction_metrics(ae: AutoencoderKL, rgba: Tensor) -> dict:
    """PSNR of the composited-over-white RGB and IoU of the alpha>0.5 masks of reconstructions."""
    return image_scores(decode_rgba(ae, encode_mean(ae, rgba)), rgba)
