"""The import layers of docs/architecture.md: a module imports only its own layer and those below."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top; a package name covers its subpackages and modules.
LAYERS = (
    ("foundation", ("gen3d", "gen3d.errors", "gen3d.io", "gen3d.config", "gen3d.settings", "gen3d.device")),
    ("diffusion core", ("gen3d.diffusion",)),
    ("geometry and data", ("gen3d.cameras", "gen3d.data")),
    ("fields and render", ("gen3d.fields", "gen3d.render", "gen3d.recon", "gen3d.export", "gen3d.shapeworld")),
    ("priors", ("gen3d.models",)),
    ("pipelines and runner", ("gen3d.runs", "gen3d.pipelines", "gen3d.training", "gen3d.batch")),
    ("server, CLI and benchmarks", ("gen3d.server", "gen3d.cli", "gen3d.commands", "gen3d.bench", "gen3d.__main__")),
)


def layer_of(module: str) -> int | None:
    """The index of the layer whose longest-matching prefix names `module`."""
    best, index = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, index = prefix, i
    return index


def imported_modules(path: Path, root: Path) -> set[str]:
    """Every gen3d module `path` imports, at the top or inside functions (`from gen3d import x`
    counts as gen3d.x when x is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            folder = root.joinpath(*node.module.split("."))
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if (folder / f"{a.name}.py").is_file() or (folder / a.name).is_dir()}
    return {name for name in found if name == "gen3d" or name.startswith("gen3d.")}


def violations(root: Path) -> list[str]:
    """`importer -> imported` for every import that points up a layer or at a module in no layer."""
    found = []
    for path in sorted((root / "gen3d").rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        own = layer_of(module)
        if own is None:
            found.append(f"{module}: in no layer (add it to LAYERS and docs/architecture.md)")
            continue
        for target in sorted(imported_modules(path, root)):
            theirs = layer_of(target)
            if theirs is None or theirs > own:
                where = "no layer" if theirs is None else LAYERS[theirs][0]
                found.append(f"{module} ({LAYERS[own][0]}) -> {target} ({where})")
    return found


def test_imports_point_down_the_layers():
    assert violations(ROOT) == []


def test_an_upward_import_is_reported(tmp_path):
    (tmp_path / "gen3d" / "diffusion").mkdir(parents=True)
    (tmp_path / "gen3d" / "runs").mkdir()
    (tmp_path / "gen3d" / "runs" / "__init__.py").write_text("")
    (tmp_path / "gen3d" / "diffusion" / "steps.py").write_text("def f():\n    from gen3d import runs\n")
    assert violations(tmp_path) == ["gen3d.diffusion.steps (diffusion core) -> gen3d.runs (pipelines and runner)"]


def test_every_job_kind_runs_a_pipeline_of_the_pipelines_layer():
    from gen3d.pipelines.kinds import KINDS

    pipelines = next(i for i, (name, _) in enumerate(LAYERS) if name == "pipelines and runner")
    assert {kind.name: layer_of(kind.pipeline) for kind in KINDS.values()} == {name: pipelines for name in KINDS}
