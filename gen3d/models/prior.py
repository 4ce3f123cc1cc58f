"""The prior as every pipeline sees it: one interface for the bundled and the real models.

Views travel as a flat stack x of shape (V, C, h, w). A multi-view prior groups consecutive
`views_per_set` views into one jointly denoised set (its network reshapes internally), so
classifier-free guidance, which stacks branches along dim 0, and score distillation work
unchanged; the diffusion time is shared within a set (`group=views_per_set` in the losses).
A single-view prior has views_per_set = 1.

Images in and out are RGBA in [0, 1], (V, 4, H, W) (straight alpha; priors whose decoder has no
alpha key it from the backdrop colour, gen3d's rule for generated views).
"""

from __future__ import annotations

import abc
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from gen3d.cameras import Cameras
from gen3d.diffusion.denoiser import Cond, Denoiser
from gen3d.errors import UserError


@dataclass
class Observed:
    """Views the prior is conditioned on (image-to-3D, few-view reconstruction)."""

    images: Tensor  # (K, 4, H, W) RGBA in [0, 1]
    cameras: Cameras
    times: Tensor | None = None  # (K,) clip times in [0, 1], for 4D priors (None: time 0)


@dataclass
class PriorOptions:
    """How a real checkpoint runs (the bundled priors ignore it); every field trades speed for memory."""

    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # float16: cuda / mps only
    attention_slicing: bool = False  # compute attention one head at a time: less peak memory, slower
    offload_text_encoder: bool = False  # keep the text / image encoder on the CPU (its outputs are cached)
    gradient_checkpointing: bool = False  # recompute activations in backward passes (VSD's LoRA update)


class Prior(abc.ABC):
    name: str
    #: views denoised jointly per set (1 for single-view priors such as Stable Diffusion)
    views_per_set: int
    #: the resolution the prior generates and scores images at
    image_size: int
    #: the most observed views one set can be conditioned on (0: text only)
    max_observed: int
    denoiser: Denoiser
    #: where the networks run; tensors may come from any device and go back to the caller's
    device: torch.device = torch.device("cpu")
    #: the denoising network as a module, for VSD's LoRA copy (None: the prior offers none)
    network: torch.nn.Module | None = None

    @property
    def output_size(self) -> int:
        """The largest views `sample` returns (a prior with an upsampler exceeds `image_size`)."""
        return self.image_size

    def network_call(self, module: torch.nn.Module) -> Callable[..., Tensor]:
        """`module` (the network or a LoRA copy of it) as a Denoiser `net`: VSD(prior.denoiser,
        prior.network, call=prior.network_call)."""
        return module

    @abc.abstractmethod
    def encode(self, rgba: Tensor) -> Tensor:
        """Images (V, 4, H, W) in [0, 1] to the denoiser's space (V, C, h, w); differentiable."""

    @abc.abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """Latents (V, C, h, w) to RGBA (V, 4, H, W) in [0, 1]."""

    @abc.abstractmethod
    def condition(self, prompt: str | None, cameras: Cameras, observed: Observed | None = None) -> tuple[Cond, Cond]:
        """(cond, uncond) for the denoiser, one entry per target view (batch V = len(cameras))."""

    def guided(self, cond: Cond, uncond: Cond, scale: float) -> Denoiser:
        from gen3d.diffusion.guidance import CFGDenoiser

        return CFGDenoiser(self.denoiser, scale, uncond)

    @abc.abstractmethod
    def sample(self, prompt: str | None, cameras: Cameras, observed: Observed | None = None, *,
               steps: int = 20, guidance: float | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Generate RGBA views (V, 4, H, W) at `cameras` (V must be a multiple of views_per_set)."""


#: prior name -> "module:function" loading it as load(model_path: Path | None, device: str) -> Prior;
#: loaders that take a third argument also receive the PriorOptions.
PRIORS: dict[str, str] = {
    "shapeworld-mv": "gen3d.models.shapeworld_prior:load",
    "shapeworld-4d": "gen3d.models.shapeworld_4d:load",
    "sd": "gen3d.models.adapters.sd:load_sd",
    "zero123": "gen3d.models.adapters.zero123:load_zero123",
    "mvdream": "gen3d.models.adapters.mvdream:load_mvdream",
}


#: the priors loaded from real checkpoints (half precision by default on CUDA)
REAL_PRIORS = ("sd", "zero123", "mvdream")


def load_prior(name: str, model_path: Path | None = None, device: str = "cpu",
               options: PriorOptions | None = None) -> Prior:
    if name not in PRIORS:
        raise UserError(f"unknown prior '{name}'; choose one of: {', '.join(sorted(PRIORS))}")
    module, func = PRIORS[name].split(":")
    loader = getattr(importlib.import_module(module), func)
    if options is not None and len(inspect.signature(loader).parameters) > 2:
        return loader(model_path, device, options)
    return loader(model_path, device)


#: the bundled priors: text through ShapeWorld's vocabulary only
BUNDLED_PRIORS = ("shapeworld-mv", "shapeworld-4d")
_SAFETENSORS_HEADER_MAX = 100 * 2**20  # safetensors' own limit on the JSON header


def check_safetensors(path: Path) -> None:
    """A UserError naming `path` unless it is a complete safetensors file (its header parses and
    every tensor's bytes lie inside the file), read without loading a tensor: random or truncated
    files are refused before anything is written."""
    import json
    import struct

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= length <= min(_SAFETENSORS_HEADER_MAX, size - 8):
                raise ValueError("bad header length")
            header = json.loads(handle.read(length))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error):
        raise UserError(f"{path}: not a readable .safetensors file (random, truncated or foreign bytes)") from None
    if 8 + length + max(ends, default=0) > size:
        raise UserError(f"{path}: truncated .safetensors file ({size} bytes; its header promises "
                        f"{8 + length + max(ends)})")


def _check_real_folder(name: str, root: Path) -> None:
    """A real prior's folder holds that prior's model, and its UNet and VAE have configs and weights."""
    from gen3d.models.adapters import folder_prior, read_json, weights_variant

    found = folder_prior(root)
    if found != name:
        raise UserError(f"{root}: holds a {found} model, not {name}; use --prior {found}")
    for component in ("unet", "vae"):
        read_json(root / component / "config.json")
        weights_variant(root / component, "diffusers")


def check_model_folder(name: str, model_path: str | Path | None) -> None:
    """What loading prior `name` from `model_path` needs, checked without loading a weight: a known
    name, a folder where one is needed and complete weight files, so a bad prior or folder is
    refused before any run folder exists."""
    if name not in PRIORS:
        raise UserError(f"unknown prior '{name}'; choose one of: {', '.join(sorted(PRIORS))}")
    if model_path is None:
        if name in REAL_PRIORS:
            raise UserError(f"--prior {name} needs --model-path DIR (a model folder; see docs/real-models.md)")
        return
    root = Path(model_path)
    if not root.is_dir():
        raise UserError(f"{root}: no such model folder (--model-path)")
    if name in BUNDLED_PRIORS:
        from gen3d.models.shapeworld_prior import verify_folder

        verify_folder(root)
    else:
        _check_real_folder(name, root)
    for weights in sorted(root.glob("**/*.safetensors")):
        check_safetensors(weights)
