"""Zero-1-to-3 / Zero123-XL / Stable Zero123 as a single-view, image-conditioned prior.

Folder: the community diffusers layout of kxic/zero123-xl: `unet/` (8 input channels), `vae/`,
`image_encoder/` (CLIPVisionModelWithProjection), `feature_extractor/` (CLIP's mean and std),
`cc_projection/` (Linear 772 -> 768) and `scheduler/`. `gen3d convert --from zero123` or
`--from stable-zero123` writes it from the original `.ckpt` and records the pose encoding in
`gen3d.json`.

Conditioning follows the original code: the cross-attention context is cc_projection applied to
[CLIP image embedding of the input view, relative pose]; the input view's VAE latent (the
unscaled posterior mode, as Zero123 was trained) is concatenated to the noisy latent; the
unconditional branch gets zeros for both. The relative pose is [delta polar (radians), sin and cos
of delta azimuth, delta radius]; Stable Zero123 replaces delta radius with the input view's polar
angle. The prompt is ignored.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen3d.cameras import Cameras
from gen3d.diffusion import diffusers_net
from gen3d.diffusion.denoiser import Cond
from gen3d.errors import UserError
from gen3d.models.adapters import (
    ACTIVATION_FACTOR,
    LatentPrior,
    camera_spherical,
    load_component,
    memory_guard,
    open_prior,
    read_json,
    read_state_dict,
    rgb_on_white,
    schedule_from_config,
)
from gen3d.models.adapters.convert import CLIP_MEAN, CLIP_STD, CCProjection
from gen3d.models.prior import Observed, PriorOptions

PoseEncoding = Literal["delta_radius", "cond_polar"]


def relative_pose(cameras: Cameras, reference: Cameras, encoding: PoseEncoding = "delta_radius") -> Tensor:
    """Zero123's pose of each target camera relative to the input view's camera, (V, 4) float32.

    Polar angles are measured from +z (polar = 90 degrees - elevation) and azimuths from +x towards
    +y, as Zero123 computed them from its z-up Objaverse renders, so gen3d's cameras map directly.
    """
    el_t, az_t, r_t = camera_spherical(cameras)
    el_c, az_c, r_c = camera_spherical(reference[0])
    polar_t, polar_c = torch.deg2rad(90 - el_t), torch.deg2rad(90 - el_c)
    d_azimuth = torch.deg2rad(az_t - az_c)
    fourth = r_t - r_c if encoding == "delta_radius" else polar_c.expand_as(polar_t)
    return torch.stack([polar_t - polar_c, d_azimuth.sin(), d_azimuth.cos(), fourth], dim=-1).float()


def clip_pixels(rgb: Tensor, size: int, mean: Tensor, std: Tensor) -> Tensor:
    """CLIP's input as Zero123 made it: bicubic resize (corners aligned, no antialiasing), then normalise."""
    rgb = F.interpolate(rgb, size=(size, size), mode="bicubic", align_corners=True)
    return (rgb - mean.to(rgb)[:, None, None]) / std.to(rgb)[:, None, None]


def load_cc_projection(root: Path, dtype: torch.dtype) -> nn.Module:
    folder = root / "cc_projection"
    config = read_json(folder / "config.json")
    module = CCProjection(config.get("in_channel", 772), config.get("out_channel", 768))
    try:
        module.load_state_dict(read_state_dict(folder))
    except RuntimeError as exc:
        raise UserError(f"{folder}: weights do not fit Linear({module.projection.in_features}, "
                        f"{module.projection.out_features}) (keys projection.weight, projection.bias)") from exc
    return module.to(dtype).eval().requires_grad_(False)


class Zero123Prior(LatentPrior):
    name = "zero123"
    views_per_set = 1
    max_observed = 1
    default_guidance = 3.0  # Zero123's sampling default

    def __init__(self, root: Path, device: torch.device, dtype: torch.dtype, options: PriorOptions):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPVisionModelWithProjection

        schedule, prediction = schedule_from_config(root / "scheduler" / "scheduler_config.json")
        unet = load_component(UNet2DConditionModel, root, "unet", dtype)
        if unet.config.in_channels != 2 * unet.config.out_channels:
            raise UserError(f"{root / 'unet'}: takes {unet.config.in_channels} input channels; Zero123's UNet takes "
                            f"the noisy and the input view's latents ({2 * unet.config.out_channels})")
        vae = load_component(AutoencoderKL, root, "vae", dtype)
        super().__init__(unet, vae, schedule, prediction, device, dtype, options)
        self.encoder_device = torch.device("cpu") if options.offload_text_encoder else device
        self.encoder_dtype = torch.float32 if options.offload_text_encoder else dtype
        self.image_encoder = load_component(CLIPVisionModelWithProjection, root, "image_encoder", self.encoder_dtype,
                                            "transformers").to(self.encoder_device)
        self.cc_projection = load_cc_projection(root, dtype).to(device)
        processor_file = root / "feature_extractor" / "preprocessor_config.json"
        processor = read_json(processor_file) if processor_file.is_file() else {}
        self.clip_mean = torch.tensor(processor.get("image_mean", CLIP_MEAN))
        self.clip_std = torch.tensor(processor.get("image_std", CLIP_STD))
        meta = read_json(root / "gen3d.json") if (root / "gen3d.json").is_file() else {}
        self.pose_encoding: PoseEncoding = meta.get("pose_encoding", "delta_radius")
        if self.pose_encoding not in ("delta_radius", "cond_polar"):
            raise UserError(f"{root / 'gen3d.json'}: pose_encoding must be delta_radius or cond_polar")
        self._reference: tuple[str, tuple[Tensor, Tensor]] | None = None

    def forward(self, module: nn.Module, x: Tensor, t: Tensor, **cond) -> Tensor:
        return diffusers_net(module)(torch.cat([x, cond["image_latents"]], dim=1), t,
                                     encoder_hidden_states=cond["encoder_hidden_states"])

    def reference(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """CLIP embedding (1, 1, D) and unscaled VAE latent (1, C, h, w) of the input view, cached by content."""
        key = hashlib.sha1(images.detach().float().cpu().numpy().tobytes()).hexdigest()
        if self._reference is None or self._reference[0] != key:
            rgb = rgb_on_white(images.detach().float().cpu(), self.image_size)
            pixels = clip_pixels(rgb, self.image_encoder.config.image_size, self.clip_mean, self.clip_std)
            with torch.no_grad(), memory_guard(self.name, ACTIVATION_FACTOR * self.weights_mb):
                embedding = self.image_encoder(pixel_values=pixels.to(self.encoder_device, self.encoder_dtype)).image_embeds
                latents = self.vae_latents(rgb)
            self._reference = (key, (embedding.to(self.device, self.dtype)[:, None], latents))
        return self._reference[1]

    def condition(self, prompt: str | None, cameras: Cameras, observed: Observed | None = None) -> tuple[Cond, Cond]:
        if observed is None or len(observed.images) == 0:
            raise UserError("the zero123 prior needs an input image (an image-to-3D job)")
        if len(observed.images) > self.max_observed:
            raise UserError(f"the zero123 prior conditions on one input view, got {len(observed.images)}")
        embedding, latents = self.reference(observed.images)
        pose = relative_pose(cameras, observed.cameras, self.pose_encoding).to(self.device, self.dtype)
        views = len(cameras)
        with torch.no_grad(), memory_guard(self.name, ACTIVATION_FACTOR * self.weights_mb):
            context = self.cc_projection(torch.cat([embedding.expand(views, -1, -1), pose[:, None]], dim=-1))
        latents = latents.expand(views, -1, -1, -1)
        return ({"encoder_hidden_states": context, "image_latents": latents},
                {"encoder_hidden_states": torch.zeros_like(context), "image_latents": torch.zeros_like(latents)})


def load_zero123(model_path: Path | None, device: str = "cpu", options: PriorOptions | None = None) -> Zero123Prior:
    root, dev, dtype, options = open_prior(model_path, "zero123", device, options)
    return Zero123Prior(root, dev, dtype, options)
