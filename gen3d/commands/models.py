"""`gen3d convert --from KIND PATH --out DIR`: original checkpoints to folders `--prior` loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gen3d.cli import app


@app.command("convert")
def convert(
    path: Annotated[Path, typer.Argument(help="The original checkpoint (.ckpt, .pt or .safetensors).")],
    kind: Annotated[str, typer.Option("--from", help="Checkpoint kind: sd, zero123, stable-zero123, mvdream.")],
    out: Annotated[Path, typer.Option("--out", help="The model folder to write (must not exist).")],
    tokenizer: Annotated[Path | None, typer.Option(
        "--tokenizer", help="CLIP tokenizer folder (vocab.json, merges.txt) for sd and mvdream; checkpoints hold none.")] = None,
    prediction: Annotated[str, typer.Option(
        "--prediction", help="sd only: epsilon, or v_prediction for the 768-pixel SD 2.x models.")] = "epsilon",
    trust_pickle: Annotated[bool, typer.Option(
        "--trust-pickle", help="Allow .ckpt/.pt files that pickle more than tensors (runs code from the file).")] = False,
) -> None:
    """Convert an original Stable Diffusion, Zero123 / Stable Zero123 or MVDream checkpoint into a model folder."""
    from gen3d.models.adapters.checkpoints import convert_checkpoint

    lay = convert_checkpoint(kind, path, out, tokenizer=tokenizer, prediction=prediction, trust_pickle=trust_pickle)
    tensors = sum(len(rules) for rules in lay.rules.values())
    typer.echo(f"wrote {out} ({lay.kind}: {', '.join(lay.rules)}; {tensors} tensors); "
               f"use it with --prior {lay.kind} --model-path {out}")
