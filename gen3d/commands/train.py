"""`gen3d train CONFIG`: the options of the `train` job (gen3d.training.pipeline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from gen3d.cli import app
from gen3d.commands.jobs import finish
from gen3d.commands.options import DryRunOpt, OutOpt, SeedOpt, SetOpt
from gen3d.config import load_config
from gen3d.errors import UserError
from gen3d.pipelines.kinds import pipeline_module
from gen3d.runs import dry_run


@app.command("train")
def train(
    config: Annotated[Path, typer.Argument(help="Training config (configs/train/*.yaml).")],
    set_: SetOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    dry: DryRunOpt = False,
) -> None:
    """Train the bundled priors' autoencoder, multi-view or 4D diffusion model, or upsampler, on ShapeWorld."""
    training = pipeline_module("train")
    cfg = load_config(training.Config, config, list(set_ or []))
    torch.set_num_threads(cfg.threads)
    if resume and out is None:
        raise UserError("--resume needs --out RUN_DIR (the run to continue)")
    job = training.build_job(cfg, {"config": str(config)}, seed)
    if dry:
        dry_run(job)
        return
    run = training.run_training(job, out, resume)
    if run is not None:
        finish(run)
