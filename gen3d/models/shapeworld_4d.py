"""`shapeworld-4d`: the bundled 4D prior, a camera- and time-conditioned version of `shapeworld-mv`.

Same autoencoder, text encoder and network as the multi-view prior, with a per-view clip time
(see `gen3d.models.multiview`) and a motion head that turns (caption, time) into the object's
pose, so every view's rays reach the network in the moving object's frame (`gen3d.models.motion`);
fine-tuned from the multi-view weights on animated ShapeWorld (`configs/train/mv4d.yaml`). It
generates a grid of views over cameras x times CAT4D style: the
first frame's cameras jointly (from text, or from the observed views), then every later frame's
cameras conditioned on up to three anchor views of the first frame, so all frames show one object
whose pose follows the caption's motion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gen3d.cameras import Cameras
from gen3d.diffusion.guidance import CFGDenoiser
from gen3d.diffusion.samplers import sample as run_sampler
from gen3d.errors import UserError
from gen3d.models.motion import MotionHead, object_frame_plucker
from gen3d.models.prior import Observed
from gen3d.models.shapeworld_prior import (
    DEFAULT_GUIDANCE,
    LATENT_SIZE,
    MAX_OBSERVED,
    ShapeWorldPrior,
    load_folder,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "priors" / "shapeworld-4d"
MAX_CAMERAS = 6  # cameras per frame the model was trained to denoise jointly


class ShapeWorld4DPrior(ShapeWorldPrior):
    name = "shapeworld-4d"

    def __init__(self, autoencoder, net, motion: MotionHead, text=None):
        super().__init__(autoencoder, net, text)
        self.motion = motion.eval().requires_grad_(False)

    @torch.no_grad()
    def poses(self, prompt: str | None, times: Tensor) -> Tensor:
        """The object's pose (N, 5) at each clip time, as the caption describes its motion."""
        pooled = self.text.encode([prompt or ""]).pooled.expand(len(times), -1)
        return self.motion(pooled, times.float())

    def ray_maps(self, cameras: Cameras, prompt: str | None, times: Tensor) -> Tensor:
        return object_frame_plucker(cameras.resized(LATENT_SIZE, LATENT_SIZE), self.poses(prompt, times)).float()

    def _sample_set(self, prompt: str | None, cameras: Cameras, times: Tensor, observed: Observed | None,
                    steps: int, guidance: float, generator: torch.Generator | None) -> Tensor:
        cond, uncond = self.condition(prompt, cameras, observed, times)
        latents = run_sampler(CFGDenoiser(self.denoiser, guidance, uncond), (len(cameras), 4, LATENT_SIZE, LATENT_SIZE),
                              sampler="dpmpp_2m", num_steps=steps, cond=cond, generator=generator)
        return self.finish(latents, cameras)

    @torch.no_grad()
    def sample_grid(self, prompt: str | None, cameras: Cameras, times: Tensor, observed: Observed | None = None, *,
                    steps: int = 20, guidance: float | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
        """RGBA views (T, C, 4, H, W) of `cameras` (C <= 6) at each clip time in `times` (T,).

        Frame 0 comes from the text (and the observed views, taken to be at their `times` or 0);
        later frames are conditioned on anchors: the observed views first, topped up to three
        with evenly spaced frame-0 outputs.
        """
        if not 1 <= len(cameras) <= MAX_CAMERAS:
            raise UserError(f"shapeworld-4d generates 1 to {MAX_CAMERAS} cameras per frame, got {len(cameras)}")
        guidance = DEFAULT_GUIDANCE if guidance is None else guidance
        times = torch.as_tensor(times, dtype=torch.float32)
        first = self._sample_set(prompt, cameras, times[:1].expand(len(cameras)), observed, steps, guidance, generator)
        anchors = anchor_views(observed, first, cameras, float(times[0]))
        frames = [first]
        for t in times[1:]:
            frames.append(self._sample_set(prompt, cameras, t.expand(len(cameras)), anchors, steps, guidance, generator))
        return torch.stack(frames)


def anchor_views(observed: Observed | None, first: Tensor, cameras: Cameras, time: float) -> Observed:
    """The observed views topped up to three with evenly spaced first-frame views (at `time`)."""
    have = 0 if observed is None else len(observed.images)
    pick = np.linspace(0, len(cameras) - 1, max(MAX_OBSERVED - have, 0)).round().astype(int).tolist()
    images, cams, times = first[pick], cameras[pick], torch.full((len(pick),), time)
    if have:
        obs_times = observed.times if observed.times is not None else torch.zeros(have)
        images = torch.cat([observed.images.float(), images])
        cams, times = Cameras.cat([observed.cameras, cams]), torch.cat([obs_times.float(), times])
    return Observed(images, cams, times)


def load(model_path: Path | None = None, device: str = "cpu") -> ShapeWorld4DPrior:
    """The 4D prior from `model_path` (default: the weights shipped in the package), sha256-checked."""
    folder = ASSETS if model_path is None else Path(model_path)
    autoencoder, net = load_folder(folder, device)
    if not net.cfg.clip_time:
        raise UserError(f"{folder}: a multi-view prior, not a 4D one (use --prior shapeworld-mv)")
    return ShapeWorld4DPrior(autoencoder, net, MotionHead.from_pretrained(folder / "motion"))
