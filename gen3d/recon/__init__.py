"""Reconstruction engine: fit a radiance field to posed images."""

from gen3d.recon.metrics import psnr, ssim
from gen3d.recon.trainer import OptimConfig, ReconConfig, ReconTrainer, pixel_rays

__all__ = ["OptimConfig", "ReconConfig", "ReconTrainer", "pixel_rays", "psnr", "ssim"]
