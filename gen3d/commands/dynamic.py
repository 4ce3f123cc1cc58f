"""`gen3d text-to-4d` and `gen3d image-to-4d`: a moving object as a dynamic 3D scene (resumable runs)."""

from __future__ import annotations

from pathlib import Path
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

PriorOpt = Annotated[str | None, typer.Option("--prior", help="Prior name (default: the bundled shapeworld-4d).")]
MethodOpt = Annotated[str | None, typer.Option("--method", help="mv-recon (default: generate the grid, fit) or sds.")]
FramesOpt = Annotated[int | None, typer.Option("--frames", help="Frames of the clip (default 8).")]


@app.command("text-to-4d")
def text_to_4d(
    prompt: Annotated[str, typer.Argument(help="A moving object, e.g. \"a red sphere bouncing\".")],
    frames: FramesOpt = None,
    method: MethodOpt = None,
    prior: PriorOpt = None,
    model_path: ModelPathOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    dry: DryRunOpt = False,
) -> None:
    """Generate a dynamic 3D object from text: the 4D prior's camera x time grid of views, fitted by a
    space-time field (or a space-time field distilled through the prior: --method sds); one GLB per
    frame and a turntable while it plays."""
    launch_pipeline("text-to-4d", {"prompt": prompt}, config=config, overrides=set_, seed=seed, out=out, dry=dry,
                    flags={"grid.frames": frames, "method": method, "prior": prior, "model_path": model_path})


@app.command("image-to-4d")
def image_to_4d(
    image: Annotated[Path, typer.Argument(help="PNG or JPEG of one object (transparent or plain background).")],
    prompt: Annotated[str, typer.Option("--prompt", help="How it moves, e.g. \"a red sphere bouncing\".")],
    mask: Annotated[Path | None, typer.Option("--mask", help="Foreground mask image (white or opaque = object).")] = None,
    elevation: Annotated[float | None, typer.Option("--elevation", help="Camera elevation of the photo in degrees (default 15).")] = None,
    frames: FramesOpt = None,
    prior: PriorOpt = None,
    model_path: ModelPathOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    dry: DryRunOpt = False,
) -> None:
    """Animate the object of one photo: the 4D prior generates the grid conditioned on the photo (time 0)
    and the caption's motion, and a space-time field is fitted to both."""
    inputs = {"image": str(image.resolve()), "mask": None if mask is None else str(mask.resolve()), "prompt": prompt}
    launch_pipeline("image-to-4d", inputs, config=config, overrides=set_, seed=seed, out=out, dry=dry,
                    flags={"grid.frames": frames, "prior": prior, "elevation": elevation, "model_path": model_path})
