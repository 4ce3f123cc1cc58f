"""Options shared by every job command (see docs/CONVENTIONS.md: command line)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gen3d.config import SEED_RANGE
from gen3d.errors import UserError
from gen3d.io import blocking_file

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML config (see configs/).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set a.b=value (repeatable).")]
SeedOpt = Annotated[int, typer.Option("--seed", min=SEED_RANGE[0], max=SEED_RANGE[1],
                                      help=f"Seed for every random choice, {SEED_RANGE[0]} to {SEED_RANGE[1]}.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Run folder (default: $GEN3D_RUNS or ./runs/<time>-<kind>-<slug>).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and estimated seconds per stage, then exit.")]
PriorOpt = Annotated[str, typer.Option("--prior", help="Prior name: shapeworld-mv, shapeworld-4d, sd, zero123, mvdream.")]
ModelPathOpt = Annotated[Optional[Path], typer.Option("--model-path", help="Folder of a real checkpoint (for sd, zero123, mvdream).")]


def check_output_file(path: Path, option: str = "--out") -> None:
    """A file a command will write: not a folder, and no parent of it a file (checked first)."""
    if path.is_dir():
        raise UserError(f"{path}: {option} is a folder; name a file")
    blocking = blocking_file(path.parent)
    if blocking is not None:
        raise UserError(f"{path}: {option} lies under the file {blocking}, not a folder")


def check_output_folder(path: Path, option: str = "--out") -> None:
    """A folder a command will make or reuse: neither it nor a parent of it may be a file."""
    blocking = blocking_file(path)
    if blocking is not None:
        where = "is a file" if blocking == path else f"lies under the file {blocking}"
        raise UserError(f"{path}: {option} {where}, not a folder")
