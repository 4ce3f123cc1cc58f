"""Pipelines: one module per job kind (declared in `gen3d.pipelines.kinds`), built from the shared
stages in `gen3d.pipelines.stages`.

A pipeline module defines `Config` (a dataclass; the run's resolved config is stored in the
manifest) and `build_job(config, inputs: dict, seed: int) -> gen3d.runs.Job`. Optionally it
defines `export_mesh(run: RunFolder, fmt: str, resolution: int | None) -> Path` for `gen3d export`.
"""

from __future__ import annotations

from gen3d.config import from_dict
from gen3d.pipelines.kinds import pipeline_module
from gen3d.runs.job import Job


def job_from_manifest(manifest: dict) -> Job:
    """Rebuild the exact job a run was started with: kind, resolved config, inputs and seed."""
    module = pipeline_module(manifest["kind"])
    config = from_dict(module.Config, manifest["config"])
    return module.build_job(config, manifest["inputs"], int(manifest["seed"]))
