"""Options shared by every job command (see docs/CONVENTIONS.md: command line)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML config (see configs/).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set a.b=value (repeatable).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Run folder (default: $GEN3D_RUNS or ./runs/<time>-<kind>-<slug>).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and estimated seconds per stage, then exit.")]
PriorOpt = Annotated[str, typer.Option("--prior", help="Prior name: shapeworld-mv, shapeworld-4d, sd, zero123, mvdream.")]
ModelPathOpt = Annotated[Optional[Path], typer.Option("--model-path", help="Folder of a real checkpoint (for sd, zero123, mvdream).")]
