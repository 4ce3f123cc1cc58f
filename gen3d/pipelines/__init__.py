"""Job kinds: name -> module, so `gen3d resume` can rebuild any run from its manifest.

A pipeline module defines `Config` (a dataclass; the run's resolved config is stored in the
manifest) and `build_job(config, inputs: dict, seed: int) -> gen3d.runs.Job`. Optionally it
defines `export_mesh(run: RunFolder, fmt: str, resolution: int | None) -> Path` for `gen3d export`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from gen3d.config import from_dict
from gen3d.errors import UserError
from gen3d.runs.job import Job

PIPELINES = {
    "reconstruct": "gen3d.pipelines.reconstruct",
    "text-to-3d": "gen3d.pipelines.text_to_3d",
    "image-to-3d": "gen3d.pipelines.image_to_3d",
    "text-to-4d": "gen3d.pipelines.text_to_4d",
    "image-to-4d": "gen3d.pipelines.image_to_4d",
    "reconstruct-prior": "gen3d.pipelines.fewview",
    "selftest": "gen3d.pipelines.selftest",
    "train": "gen3d.training.pipeline",
}


def pipeline_module(kind: str) -> ModuleType:
    if kind not in PIPELINES:
        raise UserError(f"unknown job kind '{kind}'; known kinds: {', '.join(sorted(PIPELINES))}")
    return importlib.import_module(PIPELINES[kind])


def job_from_manifest(manifest: dict) -> Job:
    """Rebuild the exact job a run was started with: kind, resolved config, inputs and seed."""
    module = pipeline_module(manifest["kind"])
    config = from_dict(module.Config, manifest["config"])
    return module.build_job(config, manifest["inputs"], int(manifest["seed"]))
