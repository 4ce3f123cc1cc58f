"""Stable Diffusion 1.x / 2.x (diffusers folders) as a single-view prior.

Loads `unet/`, `vae/`, `text_encoder/` (CLIPTextModel), `tokenizer/` and `scheduler/` from a
diffusers folder (e.g. stable-diffusion-v1-5, stable-diffusion-2-1-base, stable-diffusion-2-1);
the scheduler config becomes gen3d's DiscreteSchedule with the same betas and prediction type
(epsilon or v_prediction). Text-to-3D with a single-view prior needs view-dependent prompts
(DreamFusion): each view's prompt gets ", front view", ", side view", ", back view" or
", overhead view" from its camera.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gen3d.cameras import Cameras
from gen3d.diffusion.denoiser import Cond
from gen3d.errors import UserError
from gen3d.models.adapters import (
    LatentPrior,
    PromptEncoder,
    camera_spherical,
    load_component,
    open_prior,
    schedule_from_config,
)
from gen3d.models.prior import Observed, PriorOptions

OVERHEAD_ELEVATION = 60.0  # degrees above which a view is "overhead" (DreamFusion)
FRONT_HALF_WIDTH = 45.0  # azimuth half-width of the front and back sectors (DreamFusion)


def view_direction(elevation: float, azimuth: float, front_azimuth: float = 0.0) -> str:
    """DreamFusion's view word for a camera at (elevation, azimuth) degrees; the object faces `front_azimuth`
    (gen3d's azimuth: from +x towards +y; 0 puts the front at +x as in threestudio)."""
    if elevation > OVERHEAD_ELEVATION:
        return "overhead"
    offset = (azimuth - front_azimuth + 180.0) % 360.0 - 180.0
    if abs(offset) < FRONT_HALF_WIDTH:
        return "front"
    if abs(offset) > 180.0 - FRONT_HALF_WIDTH:
        return "back"
    return "side"


def view_prompts(prompt: str, cameras: Cameras, front_azimuth: float = 0.0) -> list[str]:
    elevation, azimuth, _ = camera_spherical(cameras)
    return [f"{prompt}, {view_direction(float(e), float(a), front_azimuth)} view" for e, a in zip(elevation, azimuth)]


class StableDiffusionPrior(LatentPrior):
    name = "sd"
    views_per_set = 1
    max_observed = 0
    default_guidance = 7.5

    def __init__(self, root: Path, device: torch.device, dtype: torch.dtype, options: PriorOptions):
        from diffusers import AutoencoderKL, UNet2DConditionModel

        schedule, prediction = schedule_from_config(root / "scheduler" / "scheduler_config.json")
        unet = load_component(UNet2DConditionModel, root, "unet", dtype)
        if unet.config.in_channels != 4:
            raise UserError(f"{root / 'unet'}: takes {unet.config.in_channels} input channels; a text-to-image "
                            "Stable Diffusion UNet takes 4 (inpainting and depth models are not supported)")
        vae = load_component(AutoencoderKL, root, "vae", dtype)
        super().__init__(unet, vae, schedule, prediction, device, dtype, options)
        self.prompts = PromptEncoder(root, device, dtype, options.offload_text_encoder)
        #: append DreamFusion's view words to the prompt (turn off to score views with the bare prompt)
        self.view_dependent = True
        #: gen3d azimuth (degrees) the object's front faces
        self.front_azimuth = 0.0
        self.negative_prompt = ""

    def condition(self, prompt: str | None, cameras: Cameras, observed: Observed | None = None) -> tuple[Cond, Cond]:
        if observed is not None:
            raise UserError("the sd prior is text-only; image-conditioned jobs need --prior zero123")
        prompt = prompt or ""
        prompts = view_prompts(prompt, cameras, self.front_azimuth) if self.view_dependent else [prompt] * len(cameras)
        return ({"encoder_hidden_states": self.prompts(prompts)},
                {"encoder_hidden_states": self.prompts([self.negative_prompt])})


def load_sd(model_path: Path | None, device: str = "cpu", options: PriorOptions | None = None) -> StableDiffusionPrior:
    root, dev, dtype, options = open_prior(model_path, "sd", device, options)
    return StableDiffusionPrior(root, dev, dtype, options)
