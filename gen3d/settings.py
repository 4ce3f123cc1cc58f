"""Where gen3d finds the files that live beside the package rather than in it: the configs folder
and the shared data folder (benchmark and test scenes, meshes).

Each comes from an environment variable first (`GEN3D_CONFIGS`, `GEN3D_DATA`), so an installed
wheel, a CI machine or a benchmark host can point anywhere; without it, from the source checkout
the package runs from (`configs/`, and `../shared/data` beside the checkout). Asking for a folder
that does not exist is a `UserError` naming the variable to set.
"""

from __future__ import annotations

import os
from pathlib import Path

import gen3d
from gen3d.errors import UserError


def source_checkout() -> Path | None:
    """The source checkout holding the imported package (the folder with its pyproject.toml), or
    None for an installed wheel."""
    root = Path(gen3d.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _folder(variable: str, default: Path | None, what: str) -> Path:
    value = os.environ.get(variable)
    path = Path(value) if value else default
    if path is None or not path.is_dir():
        raise UserError(f"{what} not found{f' at {path}' if path else ''}; set {variable} to its folder")
    return path


def configs_dir() -> Path:
    """The configs folder: `$GEN3D_CONFIGS`, else the checkout's `configs/`."""
    checkout = source_checkout()
    return _folder("GEN3D_CONFIGS", checkout and checkout / "configs", "the configs folder")


def data_dir(required: bool = True) -> Path:
    """The shared data folder: `$GEN3D_DATA`, else `shared/data` beside the checkout; with
    `required=False` the path it would be even when it is missing."""
    checkout = source_checkout()
    default = checkout and checkout.parent / "shared" / "data"
    if not required:
        return Path(os.environ.get("GEN3D_DATA") or default or "shared/data")
    return _folder("GEN3D_DATA", default, "the shared data folder")
