"""What stages set up before they work: the loaded prior (one copy per process) and the thread count."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from gen3d.models.prior import Prior, load_prior


@functools.lru_cache(maxsize=2)
def cached_prior(name: str, model_path: str | None) -> Prior:
    """Priors are frozen, so one loaded copy serves every job in the process (tests, benchmarks)."""
    return load_prior(name, None if model_path is None else Path(model_path))


def job_prior(cfg) -> Prior:
    """The prior a job's config names (`prior`, `model_path`)."""
    return cached_prior(cfg.prior, cfg.model_path)


def use_threads(cfg) -> None:
    """Run a stage on `recon.threads` CPU threads (0: as started), not only the engine's fit."""
    if cfg.recon.threads > 0:
        torch.set_num_threads(cfg.recon.threads)
