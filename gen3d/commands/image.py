"""`gen3d image-to-3d`: one photo of an object -> a 3D object as a resumable run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gen3d.cli import app
from gen3d.commands.generate import MethodOpt, PriorNameOpt
from gen3d.commands.jobs import launch_pipeline
from gen3d.commands.options import (
    ConfigOpt,
    DryRunOpt,
    ModelPathOpt,
    OutOpt,
    SeedOpt,
    SetOpt,
)


@app.command("image-to-3d")
def image_to_3d(
    image: Annotated[Path, typer.Argument(help="PNG or JPEG of one object (transparent or plain background).")],
    mask: Annotated[Path | None, typer.Option("--mask", help="Foreground mask image (white or opaque = object).")] = None,
    elevation: Annotated[float | None, typer.Option("--elevation", help="Camera elevation of the photo in degrees (default 15).")] = None,
    method: MethodOpt = None,
    prior: PriorNameOpt = None,
    model_path: ModelPathOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    dry: DryRunOpt = False,
) -> None:
    """Make a 3D object from one image: the prior generates views around it (nv-recon) and the
    reconstruction engine fits them together with the photo."""
    inputs = {"image": str(image.resolve()), "mask": None if mask is None else str(mask.resolve())}
    launch_pipeline("image-to-3d", inputs, config=config, overrides=set_, seed=seed, out=out, dry=dry,
                    flags={"method": method, "prior": prior, "elevation": elevation, "model_path": model_path})
