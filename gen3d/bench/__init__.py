"""Benchmarks: `gen3d bench NAME --json PATH [--quick]`.

Each benchmark is a module with `run(quick: bool, out_dir: Path) -> list[dict]` (rows; extra files such
as sample grids go to `out_dir`, the JSON's folder) registered below by name;
`gen3d.bench.report` writes the shared JSON layout and prints the table.
"""

BENCHMARKS = {
    "batch": "gen3d.bench.batch",
    "fields": "gen3d.bench.fields",
    "fewview": "gen3d.bench.fewview",
    "gpu": "gen3d.bench.gpu",
    "reconstruct": "gen3d.bench.reconstruct",
    "priors": "gen3d.bench.priors",
    "samplers": "gen3d.bench.samplers",
    "shapeworld": "gen3d.bench.shapeworld",
    "text-to-3d": "gen3d.bench.text_to_3d",
    "4d": "gen3d.bench.fourd",
}
