"""`gen3d bench NAME --json PATH [--quick]`."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

import typer

from gen3d.bench import BENCHMARKS
from gen3d.bench.report import write_report
from gen3d.cli import app
from gen3d.commands.options import check_output_file
from gen3d.errors import UserError


@app.command("bench")
def bench(
    name: str = typer.Argument(..., help=f"One of: {', '.join(sorted(BENCHMARKS))}."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report JSON here."),
    quick: bool = typer.Option(False, "--quick", help="A smaller, faster version of the benchmark."),
) -> None:
    """Run a benchmark, print its table and optionally write the JSON report."""
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark '{name}'; choose one of: {', '.join(sorted(BENCHMARKS))}")
    if json_path is not None:
        check_output_file(json_path, "--json")
    module = importlib.import_module(BENCHMARKS[name])
    out_dir = json_path.parent if json_path is not None else Path("bench-out")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(name, module.run(quick=quick, out_dir=out_dir), json_path)
