"""`gen3d text-to-3d`: a prompt -> a 3D object (mv-recon, sds or vsd) as a resumable run."""

from __future__ import annotations

from typing import Annotated

import typer

from gen3d.cli import app
from gen3d.commands.jobs import launch_pipeline
from gen3d.commands.options import (
    ConfigOpt,
    DryRunOpt,
    ModelPathOpt,
    OutOpt,
    SeedOpt,
    SetOpt,
)

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
    launch_pipeline("text-to-3d", {"prompt": prompt}, config=config, overrides=set_, seed=seed, out=out, dry=dry,
                    flags={"method": method, "prior": prior, "model_path": model_path})
