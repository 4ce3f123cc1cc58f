"""What stages set up before they work: the loaded prior (one copy per process) and the thread count."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from gen3d.device import DeviceSettings
from gen3d.models.prior import REAL_PRIORS, Prior, PriorOptions, load_prior


PRIOR_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@functools.lru_cache(maxsize=2)
def cached_prior(name: str, model_path: str | None, device: str = "cpu", precision: str = "fp32",
                 attention_slicing: bool = False, offload: bool = False) -> Prior:
    """Priors are frozen, so one loaded copy serves every job in the process (tests, benchmarks).
    `device`, `precision` and the memory options apply to real checkpoints; the bundled priors are
    small and run on the CPU in fp32 (their views cross to the fields' device like any tensor)."""
    options = PriorOptions(dtype=PRIOR_DTYPES[precision], attention_slicing=attention_slicing,
                           offload_text_encoder=offload)
    return load_prior(name, None if model_path is None else Path(model_path),
                      device if name in REAL_PRIORS else "cpu", options)


def settings_prior(cfg: DeviceSettings, name: str, model_path: str | None) -> Prior:
    """Prior `name` on the job's resolved device, precision and memory options."""
    return cached_prior(name, model_path, cfg.device, cfg.precision, cfg.memory.attention_slicing, cfg.memory.offload)


def job_prior(cfg) -> Prior:
    """The prior a job's config names (`prior`, `model_path`)."""
    return settings_prior(cfg, cfg.prior, cfg.model_path)


def use_threads(cfg) -> None:
    """Run a stage on `recon.threads` CPU threads (0: as started), not only the engine's fit."""
    if cfg.recon.threads > 0:
        torch.set_num_threads(cfg.recon.threads)
