"""`shapeworld-mv`: the bundled multi-view prior (latent autoencoder + multi-view denoiser + MiniLM).

It is trained by `gen3d train` on ShapeWorld and shipped inside the package (fp16 safetensors),
so every pipeline has a real prior with no download. The folder is checked against its
`manifest.json` (sha256 per file) on load: a corrupted or missing file is a UserError naming it.

This module also holds the multi-view training stages (text embeddings, latent cache, training,
export), because they share the conditioning layout with sampling: one `make_cond` builds the
network's inputs for both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import Tensor

from gen3d.cameras import Cameras, plucker
from gen3d.diffusion.denoiser import Cond, Denoiser
from gen3d.diffusion.guidance import CFGDenoiser
from gen3d.diffusion.samplers import sample as run_sampler
from gen3d.diffusion.schedules import DiscreteSchedule
from gen3d.errors import UserError
from gen3d.io import atomic_write_json, sha256_file
from gen3d.models.autoencoder import decode_rgba, encode_mean
from gen3d.models.multiview import MultiViewDenoiser
from gen3d.models.prior import Observed, Prior
from gen3d.models.text import TextEmbedding, TextEncoder
from gen3d.models.upsampler import ViewUpsampler

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "priors" / "shapeworld-mv"
MANIFEST = "manifest.json"
PRIOR_CONFIG = "prior.json"
UPSAMPLER = "upsampler"  # optional model folder: 64 px views -> 128 px
IMAGE_SIZE = 64
LATENT_SIZE = 16
MAX_VIEWS = 8  # targets per jointly denoised set (training drew 4..8)
MAX_OBSERVED = 3
DEFAULT_GUIDANCE = 4.0
SCHEDULE = "squaredcos_cap_v2"


def noise_schedule() -> DiscreteSchedule:
    return DiscreteSchedule(SCHEDULE, 1000)


def plucker_maps(cams: Cameras) -> Tensor:
    """World-space Plücker ray maps at the latent resolution, (N, 6, 16, 16) float32."""
    return plucker(cams.resized(LATENT_SIZE, LATENT_SIZE)).float()


def make_cond(text: TextEmbedding, plucker_targets: Tensor, views: int, obs_latents: Tensor,
              obs_plucker: Tensor, obs_present: Tensor, times: Tensor | None = None,
              obs_times: Tensor | None = None) -> Cond:
    """Per-target-row conditioning for `MultiViewDenoiser` from per-set observed views.

    text: one row per target view; obs_latents (S, K, 4, h, w), obs_plucker (S, K, 6, h, w),
    obs_present (S,) bool (False = the set's observed views are dropped) for S sets of `views`;
    a 4D model also takes clip times per target row (S*N,) and per observed view (S, K).
    """
    def per_row(t: Tensor) -> Tensor:
        return t.repeat_interleave(views, 0)

    k = obs_latents.shape[1]
    mask = obs_present.float()[:, None].expand(-1, k)
    cond = {"views": views, "plucker": plucker_targets, "obs_latents": per_row(obs_latents),
            "obs_mask": per_row(mask), "obs_plucker": per_row(obs_plucker), "text_tokens": text.tokens,
            "text_mask": text.mask, "text_pooled": text.pooled}
    if times is not None:
        cond["times"] = times.float()
        cond["obs_times"] = per_row(obs_times.float())
    return cond


class ShapeWorldPrior(Prior):
    name = "shapeworld-mv"
    views_per_set = 4  # the set size score distillation uses; sampling takes sets of up to 8
    image_size = IMAGE_SIZE
    max_observed = MAX_OBSERVED

    def __init__(self, autoencoder: AutoencoderKL, net: MultiViewDenoiser, text: TextEncoder | None = None,
                 upsampler: ViewUpsampler | None = None):
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.net = self.network = net.eval().requires_grad_(False)
        self.upsampler = upsampler.eval().requires_grad_(False) if upsampler is not None else None
        self.text = text or TextEncoder()
        self.denoiser = Denoiser(self.net, noise_schedule(), "v")

    @property
    def output_size(self) -> int:
        return IMAGE_SIZE * (self.upsampler.cfg.scale if self.upsampler is not None else 1)

    def finish(self, latents: Tensor, cameras: Cameras) -> Tensor:
        """Generated latents -> RGBA views at the cameras' image size: decoded at 64 px, then
        upsampled by the upsampler when the cameras ask for its size, else resized."""
        rgba = self.decode(latents).clamp(0, 1)
        size = (cameras.height, cameras.width)
        if self.upsampler is not None and size == (self.output_size, self.output_size):
            return self.upsampler.upsample_rgba(rgba).clamp(0, 1)
        if size != tuple(rgba.shape[-2:]):
            rgba = F.interpolate(rgba, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return rgba

    def set_size(self, n_views: int) -> int:
        """Views per jointly denoised set for a stack of `n_views`: all of them up to 8, else sets of 4."""
        if n_views <= MAX_VIEWS:
            return n_views
        if n_views % self.views_per_set:
            raise UserError(f"shapeworld-mv denoises up to {MAX_VIEWS} views at once or sets of "
                            f"{self.views_per_set}; got {n_views} views")
        return self.views_per_set

    def encode(self, rgba: Tensor) -> Tensor:
        if rgba.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            rgba = F.interpolate(rgba, size=(IMAGE_SIZE, IMAGE_SIZE), mode="area")
        return encode_mean(self.autoencoder, rgba)

    def decode(self, latents: Tensor) -> Tensor:
        return decode_rgba(self.autoencoder, latents)

    def ray_maps(self, cameras: Cameras, prompt: str | None, times: Tensor) -> Tensor:
        """The network's per-view camera input: world-space Plücker maps (a static world ignores
        the prompt and times; the 4D prior gives rays in the moving object's frame)."""
        return plucker_maps(cameras)

    def condition(self, prompt: str | None, cameras: Cameras, observed: Observed | None = None,
                  times: Tensor | None = None) -> tuple[Cond, Cond]:
        """`times` (clip time per target view, default 0; observed views carry theirs in
        `observed.times`) reach only a 4D network; a multi-view network has no notion of time."""
        n = len(cameras)
        views = self.set_size(n)
        sets = n // views
        if observed is not None and len(observed.images) > MAX_OBSERVED:
            raise UserError(f"shapeworld-mv takes at most {MAX_OBSERVED} observed views, got {len(observed.images)}")
        if observed is None or len(observed.images) == 0:
            obs_lat = torch.zeros(sets, 0, 4, LATENT_SIZE, LATENT_SIZE)
            obs_pl = torch.zeros(sets, 0, 6, LATENT_SIZE, LATENT_SIZE)
        else:
            with torch.no_grad():
                obs_lat = self.encode(observed.images.float())[None].expand(sets, -1, -1, -1, -1)
            obs_times = observed.times if observed.times is not None else torch.zeros(len(observed.images))
            obs_pl = self.ray_maps(observed.cameras, prompt, obs_times.float().cpu())[None].expand(sets, -1, -1, -1, -1)
        times = torch.zeros(n) if times is None else times.float().cpu()
        pl = self.ray_maps(cameras, prompt, times)
        clip = {}
        if self.net.cfg.clip_time:
            k = obs_lat.shape[1]
            obs_t = observed.times if observed is not None and observed.times is not None else torch.zeros(k)
            clip = {"times": times, "obs_times": obs_t.float().cpu()[None].expand(sets, -1)}
        cond = make_cond(self.text.encode([prompt or ""] * n), pl, views, obs_lat, obs_pl,
                         torch.ones(sets, dtype=torch.bool), **clip)
        uncond = make_cond(self.text.empty(n), pl, views, obs_lat, obs_pl, torch.zeros(sets, dtype=torch.bool), **clip)
        return cond, uncond

    @torch.no_grad()
    def sample(self, prompt: str | None, cameras: Cameras, observed: Observed | None = None, *,
               steps: int = 20, guidance: float | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Views at the cameras' image size (`finish`). Up to 8 in one set; more are generated in sets
        of up to 8 conditioned on the given observed views plus earlier outputs (up to 3 observed in
        all), so every view shares one object."""
        guidance = DEFAULT_GUIDANCE if guidance is None else guidance
        outputs: list[Tensor] = []
        done: list[int] = []
        for start in range(0, len(cameras), MAX_VIEWS):
            chunk = list(range(start, min(start + MAX_VIEWS, len(cameras))))
            obs = _chain_observed(observed, cameras, outputs, done)
            cond, uncond = self.condition(prompt, cameras[chunk], obs)
            latents = run_sampler(CFGDenoiser(self.denoiser, guidance, uncond), (len(chunk), 4, LATENT_SIZE, LATENT_SIZE),
                                  sampler="dpmpp_2m", num_steps=steps, cond=cond, generator=generator)
            outputs.append(self.finish(latents, cameras[chunk]))
            done += chunk
        return torch.cat(outputs)


def _chain_observed(observed: Observed | None, cameras: Cameras, outputs: list[Tensor], done: list[int]) -> Observed | None:
    """The user's observed views topped up to 3 with evenly spaced earlier outputs."""
    if not outputs:
        return observed
    have = 0 if observed is None else len(observed.images)
    free = MAX_OBSERVED - have
    if free <= 0:
        return observed
    generated = torch.cat(outputs)
    pick = np.linspace(0, len(done) - 1, free).round().astype(int).tolist()
    images, cams = generated[pick], cameras[[done[i] for i in pick]]
    if observed is not None and have:
        images, cams = torch.cat([observed.images, images]), Cameras.cat([observed.cameras, cams])
    return Observed(images, cams)


# ---- shipped folder: manifest + sha256 -----------------------------------------------------

def write_manifest(folder: Path, name: str = "shapeworld-mv") -> dict:
    """Record every file under `folder` (except the manifest) with its sha256."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {"name": name, "files": {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def verify_folder(folder: Path) -> None:
    """UserError naming the first missing or modified file of a prior folder."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: missing; not a bundled prior folder")
    try:
        files = json.loads(path.read_text())["files"]
    except (json.JSONDecodeError, KeyError):
        raise UserError(f"{path}: not a valid prior manifest") from None
    for name, digest in files.items():
        if not (folder / name).is_file():
            raise UserError(f"{folder / name}: missing (listed in {path})")
        if sha256_file(folder / name) != digest:
            raise UserError(f"{folder / name}: sha256 does not match {path} (corrupted or modified)")


def export_prior(folder: Path, autoencoder: AutoencoderKL, net: MultiViewDenoiser, info: dict,
                 name: str = "shapeworld-mv", extras: dict[str, Path] | None = None) -> dict:
    """Write the shippable folder (fp16 weights, configs, prior.json, manifest.json) from scratch;
    `extras` are further model folders copied in under their names (the 4D prior's motion head)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    ae16 = AutoencoderKL.from_config(autoencoder.config)
    ae16.load_state_dict(autoencoder.state_dict())
    ae16.to(torch.float16).save_pretrained(folder / "autoencoder")
    net.save_pretrained(folder / "multiview", dtype=torch.float16)
    for extra_name, source in (extras or {}).items():
        shutil.copytree(source, folder / extra_name)
    atomic_write_json(folder / PRIOR_CONFIG, {"schedule": SCHEDULE, "prediction": "v", "image_size": IMAGE_SIZE,
                                              "latent_size": LATENT_SIZE, "guidance": DEFAULT_GUIDANCE, **info})
    return write_manifest(folder, name)


def add_upsampler(source: Path, folder: Path, upsampler: ViewUpsampler, info: dict) -> dict:
    """Write prior folder `source` with `upsampler` added (fp16) as `folder`, its prior.json given
    the output size and how the upsampler was trained, and a new manifest."""
    folder = Path(folder)
    verify_folder(source)
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(source, folder)
    if (folder / UPSAMPLER).exists():
        shutil.rmtree(folder / UPSAMPLER)
    upsampler.save_pretrained(folder / UPSAMPLER, dtype=torch.float16)
    config = json.loads((folder / PRIOR_CONFIG).read_text())
    config.update(output_size=IMAGE_SIZE * upsampler.cfg.scale, upsampler=info)
    atomic_write_json(folder / PRIOR_CONFIG, config)
    return write_manifest(folder, json.loads((folder / MANIFEST).read_text())["name"])


def load_upsampler(folder: Path, device: str = "cpu") -> ViewUpsampler | None:
    """The prior folder's upsampler, or None when it has none (its views stay at 64 px)."""
    path = Path(folder) / UPSAMPLER
    return ViewUpsampler.from_pretrained(path).to(device) if path.is_dir() else None


def load_folder(folder: Path, device: str = "cpu") -> tuple[AutoencoderKL, MultiViewDenoiser]:
    """The autoencoder and network of a shipped-layout prior folder, sha256-checked."""
    verify_folder(folder)
    autoencoder = AutoencoderKL.from_pretrained(folder / "autoencoder", torch_dtype=torch.float32, low_cpu_mem_usage=False).to(device)
    return autoencoder, MultiViewDenoiser.from_pretrained(folder / "multiview").to(device)


def load(model_path: Path | None = None, device: str = "cpu") -> ShapeWorldPrior:
    """The prior from `model_path` (default: the weights shipped in the package), sha256-checked."""
    folder = ASSETS if model_path is None else Path(model_path)
    autoencoder, net = load_folder(folder, device)
    if net.cfg.clip_time:
        raise UserError(f"{model_path}: a 4D prior, not a multi-view one (use --prior shapeworld-4d)")
    return ShapeWorldPrior(autoencoder, net, upsampler=load_upsampler(folder, device))


def load_autoencoder(folder: Path) -> AutoencoderKL:
    """An autoencoder folder written by an autoencoder training run, as float32."""
    if not (Path(folder) / "config.json").is_file():
        raise UserError(f"{Path(folder) / 'config.json'}: missing; train the autoencoder first (configs/train/ae.yaml)")
    return AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32, low_cpu_mem_usage=False).eval()
