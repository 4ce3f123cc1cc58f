"""`gen3d text-to-3d`: a prompt -> a 3D object (mv-recon, sds or vsd) as a resumable run."""

from __future__ import annotations

from typing import Annotated

import typer

from gen3d.cli import app
from gen3d.commands.jobs import job_overrides, launch_job
from gen3d.commands.options import (
    ConfigOpt,
    DryRunOpt,
    ModelPathOpt,
    OutOpt,
    SeedOpt,
    SetOpt,
)
from gen3d.config import load_config
from gen3d.pipelines import pipeline_module

MethodOpt = Annotated[str | None, typer.Option("--method", help="mv-recon (default), sds or vsd.")]
PriorNameOpt = Annotated[str | None, typer.Option("--prior", help="Prior name (default: the bundled shapeworld-mv).")]


@app.command("text-to-3d")
def text_to_3d(
    prompt: Annotated[str, typer.Argument(help="What to make, e.g. \"a red sphere\".")],
    method: MethodOpt = None,
    prior: PriorNameOpt = None,
    model_path: ModelPathOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    dry: DryRunOpt = False,
) -> None:
    """Generate a 3D object from text: views from the multi-view prior fitted by the reconstruction
    engine (mv-recon), or a field distilled through the prior (sds, vsd)."""
    module = pipeline_module("text-to-3d")
    flags = {"method": method, "prior": prior, "model_path": None if model_path is None else model_path.resolve()}
    cfg = load_config(module.Config, config, job_overrides(set_, **flags))
    launch_job(module.build_job(cfg, {"prompt": prompt}, seed), out=out, dry=dry)
