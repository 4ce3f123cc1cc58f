"""Where a job runs and at what precision, chosen once per run (docs/gpu.md).

`--device auto|cpu|cuda[:N]` and `precision` (fp32, fp16, bf16) are config keys every job's
config carries (`DeviceSettings`); `resolve_settings` checks them and replaces `auto` before any
run folder exists, so a bad value is a one-line error naming the key and the manifest records
what actually ran. The CPU path is the reference: choosing it changes nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from gen3d.errors import UserError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class MemoryConfig:
    """How a real prior saves GPU memory; each option trades speed for memory."""

    attention_slicing: bool = False  # attention one head at a time (PyTorch's memory-efficient kernels are the default)
    offload: bool = False  # text and image encoders stay on the CPU (their outputs are cached)


@dataclass
class DeviceSettings:
    """The keys every job config inherits: `device`, `precision` and the priors' `memory` options."""

    device: str = "auto"  # auto (CUDA when available), cpu, cuda or cuda:N
    precision: str = "auto"  # fp32, fp16, bf16; auto: fp16 for real priors on CUDA, fp32 otherwise
    memory: MemoryConfig = dataclasses.field(default_factory=MemoryConfig)


def resolve_device(name: str, key: str = "device") -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` as a torch device, refusing what this machine cannot run."""
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"config key '{key}': unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"config key '{key}': device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"config key '{key}': '{name}' requested but this torch build sees no CUDA GPU; "
                            f"use --device cpu")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise UserError(f"config key '{key}': '{name}' requested but only {torch.cuda.device_count()} "
                            f"CUDA device(s) are visible")
        dev = torch.device("cuda", index)
    return dev


def resolve_precision(name: str, device: torch.device, real_prior: bool) -> str:
    """`auto` as fp16 for a real prior on CUDA and fp32 otherwise; fp16 needs CUDA, and only real
    priors' networks run below fp32 (fields keep fp32 weights; tiny-cuda-nn uses half internally)."""
    if name == "auto":
        return "fp16" if device.type == "cuda" and real_prior else "fp32"
    if name not in PRECISIONS:
        raise UserError(f"config key 'precision': '{name}' is not one of auto, {', '.join(PRECISIONS)}")
    if name == "fp16" and device.type != "cuda":
        raise UserError("config key 'precision': fp16 runs on CUDA only; use fp32 or bf16 on the CPU")
    if name != "fp32" and not real_prior:
        raise UserError(f"config key 'precision': {name} applies to real priors (sd, zero123, mvdream); "
                        f"this job runs in fp32")
    return name


def resolve_settings(cfg: object, real_prior: bool = False) -> tuple[str, str]:
    """Check and resolve a config's `device` and `precision` in place; configs without them run on
    the CPU in fp32. Returns (device, precision) as the manifest records them."""
    if not isinstance(cfg, DeviceSettings):
        return "cpu", "fp32"
    dev = resolve_device(cfg.device)
    cfg.device, cfg.precision = str(dev), resolve_precision(cfg.precision, dev, real_prior)
    return cfg.device, cfg.precision


_ACTIVE = {"device": "cpu"}


def activate(device: str) -> None:
    """Make `device` the one engines use unless told otherwise (the runner sets it per stage); on CUDA
    with PyTorch's deterministic kernels where it has them (docs/gpu.md: reproducibility)."""
    _ACTIVE["device"] = device
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def active_device() -> str:
    return _ACTIVE["device"]


def reset_peak_memory(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: str) -> float | None:
    """Peak GPU memory allocated since the last reset, in MiB (None on the CPU)."""
    if torch.device(device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


@contextlib.contextmanager
def out_of_memory(what: str, needed_mb: float, hint: str) -> Iterator[None]:
    """Turn an out-of-memory error into a UserError naming the memory `what` needs and how to save it."""
    try:
        yield
    except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError; MPS raises a plain one
        if not isinstance(exc, torch.OutOfMemoryError) and "out of memory" not in str(exc):
            raise
        raise UserError(f"out of GPU memory in {what}: it needs about {needed_mb:.0f} MiB; reduce it with {hint}"
                        ) from exc
