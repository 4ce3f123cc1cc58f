"""Real pretrained priors (Stable Diffusion, Zero-1-to-3, MVDream) behind gen3d's Prior interface.

Each adapter loads a diffusers-style folder (docs/real-models.md) into a `LatentPrior`: images go
through the checkpoint's VAE, its UNet runs as a gen3d Denoiser on the checkpoint's own DDPM
schedule, and everything downstream (samplers, guidance, SDS, VSD) is gen3d's. The networks run on
`device` in `dtype`; tensors cross the interface in float32 on the caller's device, so pipelines
need no special cases. This module holds what the adapters share: device and dtype choice,
folder checks with one-line errors, the out-of-memory message, prompt encoding and the base class.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen3d.data.foreground import ForegroundConfig, key_background
from gen3d.diffusion import Denoiser, DiscreteSchedule, diffusers_net, sample
from gen3d.device import out_of_memory
from gen3d.errors import UserError
from gen3d.models.prior import Prior, PriorOptions

MEMORY_OPTIONS = ("dtype=float16 (or bfloat16), attention_slicing=true, offload_text_encoder=true, "
                  "gradient_checkpointing=true (VSD), or fewer views per step")
ACTIVATION_FACTOR = 2.0  # a denoising step's peak is about twice the weights (activations, guidance branches)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}
_WEIGHTS = {
    "diffusers": "diffusion_pytorch_model",
    "transformers": "model",
}


def memory_guard(prior_name: str, needed_mb: float) -> contextlib.AbstractContextManager:
    """Turn an out-of-memory error into a UserError naming the memory needed and the options reducing it."""
    return out_of_memory(f"the '{prior_name}' prior", needed_mb, f"the prior options {MEMORY_OPTIONS}")


def weights_mb(*modules: nn.Module) -> float:
    """The memory the modules' parameters and buffers take, in MiB."""
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"unknown device '{device}'; use cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' requested but this torch build sees no CUDA GPU; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device '{device}' requested but MPS is not available here; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device '{device}' is not supported; use cpu, cuda, cuda:N or mps")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name not in _DTYPES:
        raise UserError(f"prior dtype '{name}' is not one of: {', '.join(_DTYPES)}")
    if name == "float16" and device.type == "cpu":
        raise UserError("prior dtype float16 runs on cuda or mps only; use bfloat16 or float32 on the CPU")
    return _DTYPES[name]


# ---- model folders ------------------------------------------------------------------------------

def model_root(model_path: Path | None, prior_name: str) -> Path:
    if model_path is None:
        raise UserError(f"--prior {prior_name} needs --model-path DIR (a model folder; see docs/real-models.md)")
    root = Path(model_path)
    if not root.is_dir():
        raise UserError(f"{root}: no such model folder (--model-path)")
    return root


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: missing (is --model-path the right kind of model folder?)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except (UnicodeDecodeError, OSError):
        raise UserError(f"{path}: not a readable JSON text file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def weights_variant(folder: Path, library: str) -> str | None:
    """None for plain weights, "fp16" for fp16-only folders; a UserError naming what is missing otherwise."""
    stem = _WEIGHTS[library]
    for variant, infix in ((None, ""), ("fp16", ".fp16")):
        for suffix in (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json"):
            if (folder / f"{stem}{infix}{suffix}").is_file():
                return variant
    raise UserError(f"{folder}: no weights ({stem}.safetensors or {stem}.bin)")


def read_state_dict(folder: Path, library: str = "diffusers") -> dict[str, Tensor]:
    """The tensors of a single-file component (for the components gen3d loads itself)."""
    variant = ".fp16" if weights_variant(folder, library) else ""
    path = folder / f"{_WEIGHTS[library]}{variant}.safetensors"
    if path.is_file():
        from safetensors.torch import load_file

        return load_file(path)
    path = path.with_suffix(".bin")
    if not path.is_file():
        raise UserError(f"{folder}: sharded weights are not supported for this component; save it as one file")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_component(cls, root: Path, subfolder: str, dtype: torch.dtype, library: str = "diffusers") -> nn.Module:
    """One pretrained component, frozen and in eval mode; incomplete or mismatched weights are a UserError."""
    folder = root / subfolder
    read_json(folder / "config.json")
    variant = weights_variant(folder, library)
    kwargs = {}
    if library == "diffusers":
        from diffusers.utils.import_utils import is_accelerate_available

        kwargs["low_cpu_mem_usage"] = is_accelerate_available()  # without accelerate: random init, then load
    try:
        model, info = cls.from_pretrained(folder, torch_dtype=dtype, variant=variant, output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{folder}: cannot load it as a {cls.__name__} ({reason})") from exc
    bad = sorted(info.get("missing_keys") or []) + [str(m[0] if isinstance(m, tuple) else m)
                                                     for m in info.get("mismatched_keys") or []]
    if bad:
        raise UserError(f"{folder}: its weights lack or misshape {len(bad)} tensors of a {cls.__name__}, e.g. '{bad[0]}'")
    return model.eval().requires_grad_(False)


def schedule_from_config(path: Path) -> tuple[DiscreteSchedule, str]:
    """gen3d's DiscreteSchedule and prediction type for a diffusers scheduler_config.json."""
    config = read_json(path)
    if config.get("trained_betas"):
        raise UserError(f"{path}: trained_betas are not supported; use a beta_schedule")
    kind = config.get("beta_schedule", "linear")
    if kind not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        raise UserError(f"{path}: beta_schedule '{kind}' is not supported (linear, scaled_linear, squaredcos_cap_v2)")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in _PREDICTIONS:
        raise UserError(f"{path}: prediction_type '{prediction}' is not one of {', '.join(_PREDICTIONS)}")
    schedule = DiscreteSchedule(kind, config.get("num_train_timesteps", 1000), config.get("beta_start", 0.0001),
                                config.get("beta_end", 0.02), zero_terminal_snr=config.get("rescale_betas_zero_snr", False))
    return schedule, _PREDICTIONS[prediction]


def quiet_hub_libraries() -> None:
    """No progress bars or load reports from diffusers / transformers: gen3d reports its own progress."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# ---- shared pieces ------------------------------------------------------------------------------

def rgb_on_white(rgba: Tensor, size: int) -> Tensor:
    """RGBA (V, 4, H, W) in [0, 1] composited onto white and resized to size x size: (V, 3, size, size)."""
    rgb = rgba[:, :3] * rgba[:, 3:4] + (1 - rgba[:, 3:4]) if rgba.shape[1] == 4 else rgba[:, :3]
    if rgb.shape[-2:] != (size, size):
        rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return rgb


def backdrop_alpha(rgb: Tensor) -> Tensor:
    """Alpha (V, 1, H, W) keyed from each view's border colour. The real priors draw one object on a
    plain backdrop (white for Zero123 and MVDream) and have no alpha of their own; gen3d's rule for
    generated views is "the decoded alpha, or the keyed background", so fits get a real mask loss."""
    cfg = ForegroundConfig()
    return torch.stack([key_background(view.permute(1, 2, 0), cfg) for view in rgb])[:, None]


def camera_spherical(cameras) -> tuple[Tensor, Tensor, Tensor]:
    """Elevation and azimuth in degrees (azimuth from +x towards +y, z up) and radius of the camera centres."""
    centers = cameras.centers.double()
    radius = centers.norm(dim=-1)
    elevation = torch.rad2deg(torch.asin((centers[:, 2] / radius).clamp(-1, 1)))
    azimuth = torch.rad2deg(torch.atan2(centers[:, 1], centers[:, 0]))
    return elevation, azimuth, radius


class PromptEncoder:
    """CLIP text features (B, L, D) per prompt, cached: a run asks for the same few prompts every step.

    With `offload` the text encoder stays on the CPU in float32 and only its outputs move to the device.
    """

    def __init__(self, root: Path, device: torch.device, dtype: torch.dtype, offload: bool):
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer_dir = root / "tokenizer"
        if not ((tokenizer_dir / "vocab.json").is_file() or (tokenizer_dir / "tokenizer.json").is_file()):
            raise UserError(f"{tokenizer_dir}: missing CLIP tokenizer files (vocab.json and merges.txt)")
        self.tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
        self.run_device, self.device, self.dtype = (torch.device("cpu") if offload else device), device, dtype
        encoder_dtype = torch.float32 if offload else dtype
        self.encoder = load_component(CLIPTextModel, root, "text_encoder", encoder_dtype, "transformers").to(self.run_device)
        self._cache: dict[str, Tensor] = {}

    def __call__(self, prompts: list[str]) -> Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            with torch.no_grad():
                features = self.encoder(ids.to(self.run_device))[0]
            for prompt, feature in zip(missing, features):
                self._cache[prompt] = feature.to(self.device, self.dtype)
        return torch.stack([self._cache[p] for p in prompts])


class LatentPrior(Prior):
    """A latent-diffusion prior: VAE + UNet on a DDPM schedule, with the options of `PriorOptions`.

    Subclasses set `name`, `views_per_set`, `max_observed`, `default_guidance` and implement
    `condition`; `forward` adapts the UNet call when the conditioning is more than cross-attention.
    """

    default_guidance: float = 7.5

    def __init__(self, unet: nn.Module, vae: nn.Module, schedule: DiscreteSchedule, prediction: str,
                 device: torch.device, dtype: torch.dtype, options: PriorOptions):
        self.device, self.dtype = device, dtype
        if options.attention_slicing:
            unet.set_attention_slice("max")  # one head at a time: works for any head count
        if options.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.weights_mb = weights_mb(unet, vae)
        with memory_guard(self.name, self.weights_mb):
            self.unet, self.vae = unet.to(device), vae.to(device)
        self.latent_scale = float(vae.config.scaling_factor)
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = unet.config.out_channels
        self.image_size = unet.config.sample_size * self.vae_factor
        self.network = unet
        self.denoiser = Denoiser(self.network_call(unet), schedule, prediction)

    def forward(self, module: nn.Module, x: Tensor, t: Tensor, **cond) -> Tensor:
        return diffusers_net(module)(x, t, **cond)

    def network_call(self, module: nn.Module) -> Callable[..., Tensor]:
        def call(x: Tensor, t: Tensor, **cond) -> Tensor:
            with memory_guard(self.name, ACTIVATION_FACTOR * self.weights_mb):
                out = self.forward(module, x.to(self.device, self.dtype), t.to(self.device, torch.float32), **cond)
            return out.to(x.device, x.dtype)

        return call

    def vae_latents(self, rgb: Tensor) -> Tensor:
        """The VAE posterior mean of RGB (V, 3, H, W) in [0, 1], unscaled, on the device in the model dtype."""
        with memory_guard(self.name, ACTIVATION_FACTOR * self.weights_mb):
            return self.vae.encode((rgb * 2 - 1).to(self.device, self.dtype)).latent_dist.mean

    def encode(self, rgba: Tensor) -> Tensor:
        latents = self.vae_latents(rgb_on_white(rgba, self.image_size)) * self.latent_scale
        return latents.to(rgba.device, torch.float32)

    def decode(self, latents: Tensor) -> Tensor:
        with memory_guard(self.name, ACTIVATION_FACTOR * self.weights_mb):
            image = self.vae.decode((latents / self.latent_scale).to(self.device, self.dtype)).sample
        rgb = ((image.float() + 1) / 2).clamp(0, 1).to(latents.device)
        return torch.cat([rgb, backdrop_alpha(rgb)], dim=1)

    def sample(self, prompt, cameras, observed=None, *, steps: int = 20, guidance: float | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        if len(cameras) % self.views_per_set:
            raise ValueError(f"{self.name} samples sets of {self.views_per_set} views, got {len(cameras)} cameras")
        cond, uncond = self.condition(prompt, cameras, observed)
        scale = self.default_guidance if guidance is None else guidance
        side = self.image_size // self.vae_factor
        latents = sample(self.guided(cond, uncond, scale), (len(cameras), self.latent_channels, side, side),
                         sampler="dpmpp_2m", num_steps=steps, spacing="trailing", cond=cond, generator=generator)
        with torch.no_grad():
            return self.decode(latents)


def folder_prior(root: Path) -> str:
    """Which prior a model folder is for, from the components only that model has."""
    if (root / "cc_projection").is_dir() or (root / "image_encoder").is_dir():
        return "zero123"
    unet = read_json(root / "unet" / "config.json")
    if unet.get("_class_name") == "MultiViewUNetModel" or unet.get("class_embed_type") == "projection":
        return "mvdream"
    return "sd"


def open_prior(model_path: Path | None, prior_name: str, device: str, options: PriorOptions | None
               ) -> tuple[Path, torch.device, torch.dtype, PriorOptions]:
    """The checks every loader starts with: the folder and its kind, the device and dtype."""
    options = options or PriorOptions()
    root = model_root(model_path, prior_name)
    found = folder_prior(root)
    if found != prior_name:
        raise UserError(f"{root}: holds a {found} model, not {prior_name}; use --prior {found}")
    dev = resolve_device(device)
    quiet_hub_libraries()
    return root, dev, resolve_dtype(options.dtype, dev), options
