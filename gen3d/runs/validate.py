"""The one validation pass every job goes through before its run folder, `--out` or `$GEN3D_RUNS`
is created or touched (docs/CONVENTIONS.md: command line).

Config loading (`gen3d.config`) already refuses unknown keys, wrong types and NaN or infinite
numbers; this pass adds what needs the whole resolved job: sane counts and sizes, the memory a
request would need, export settings that can only produce no mesh, the seed, the prior and its
model folder, the input files and the output folder. Its warnings go to the manifest.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gen3d.config import check_seed, to_dict
from gen3d.data.readers import scan_scene
from gen3d.errors import UserError
from gen3d.io import blocking_file
from gen3d.models.prior import BUNDLED_PRIORS, REAL_PRIORS, check_model_folder
from gen3d.runs.folder import MANIFEST, runs_root
from gen3d.shapeworld.spec import SHAPES

# Counts and sizes, by the config key's last part (or its tail: "export.threshold"): inclusive
# [low, high], None open. Wider than any useful run, narrow enough that a typo fails here.
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "steps": (1, 10_000_000),
    "resolution": (2, None),  # the grid's memory is checked instead (export.resolution)
    "render_size": (1, 8192),
    "turntable_size": (1, 8192),
    "view_size": (1, 8192),
    "texture_size": (0, 16384),
    "size": (1, 16384),
    "frames": (1, 10_000),
    "turntable_frames": (1, 10_000),
    "eval_frames": (1, 1000),
    "views": (1, 100_000),
    "passes": (1, 1000),
    "batch_rays": (1, 2**24),
    "pointcloud_points": (1, 10**8),
    "target_faces": (4, 10**9),
    "threads": (0, 4096),
    "downscale": (1, 1000),
    "max_steps": (1, 10**6),
    "export.threshold": (1e-6, 1e6),
    "background": (0.0, 1.0),
    "background_color": (0.0, 1.0),
}
EVERY = (1, 10**9)  # every `*_every` key: a period in steps
# Lists of a fixed length, by the key's last part.
LENGTHS = {"size": 2, "background": 3, "background_color": 3, "betas": 2}

BYTES_PER_GRID_POINT = 16  # density grid, marching-cubes and solidify copies (float32)
BYTES_PER_IMAGE_PIXEL = 64  # float32 RGBA rendered at 2x2 supersampling


def _leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), data


def _limit(key: str) -> tuple[float | None, float | None] | None:
    for pattern, bounds in LIMITS.items():
        if key == pattern or key.endswith("." + pattern):
            return bounds
    return EVERY if key.rsplit(".", 1)[-1].endswith("_every") else None


def check_limits(cfg: Any) -> None:
    """Every count and size of the config (list items too) inside its LIMITS, and fixed-length
    lists (an image size, a colour) of their LENGTHS."""
    for key, value in _leaves(to_dict(cfg)):
        length = LENGTHS.get(key.rsplit(".", 1)[-1])
        if length is not None and isinstance(value, (list, tuple)) and len(value) != length:
            raise UserError(f"config key '{key}' must list {length} numbers, got {list(value)!r}")
        bounds = _limit(key)
        if bounds is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            low, high = bounds
            if (low is not None and item < low) or (high is not None and item > high):
                span = f"[{low}, {high}]" if high is not None else f"at least {low}"
                raise UserError(f"config key '{key}' must be {'in ' if high is not None else ''}{span}, got {item!r}")


def memory_bytes() -> int:
    """The machine's physical memory (the ceiling a single request may plan for)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_memory(key: str, needed: float, what: str) -> None:
    """Refuse a request whose estimate exceeds the machine's memory, with the estimate."""
    available = memory_bytes()
    if needed > available:
        raise UserError(f"{key}: {what} needs about {_gib(needed)} of memory; this machine has {_gib(available)}")


def check_grid_memory(resolution: int, key: str = "config key 'export.resolution'") -> None:
    """Marching cubes holds a resolution^3 grid (and copies of it) in memory."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise UserError(f"{key} must be an integer of at least 2, got {resolution!r}")
    check_memory(f"{key} = {resolution}", resolution**3 * BYTES_PER_GRID_POINT, f"a {resolution}^3 marching-cubes grid")


def check_export(cfg: Any) -> None:
    """Export settings that can only produce no mesh, and meshes or images too large to hold."""
    export = getattr(cfg, "export", None)
    if export is None or not dataclasses.is_dataclass(export):
        return
    if hasattr(export, "formats") and not export.formats:
        raise UserError("config key 'export.formats' is empty: the run would export no mesh; "
                        "list at least one of glb, ply, obj")
    check_grid_memory(export.resolution)
    frames = getattr(export, "turntable_frames", 0) * getattr(export, "turntable_size", 0) ** 2
    check_memory(f"config key 'export.turntable_size' = {export.turntable_size}", frames * BYTES_PER_IMAGE_PIXEL,
                 f"a turntable of {export.turntable_frames} frames")
    texels = getattr(export, "texture_size", 0) ** 2
    check_memory(f"config key 'export.texture_size' = {export.texture_size}", texels * BYTES_PER_IMAGE_PIXEL,
                 "the texture")


def prior_of(cfg: Any) -> tuple[str | None, str | None]:
    """(prior name, model folder) a job's config names; (None, None) for jobs without a prior."""
    prior = getattr(cfg, "prior", None)
    if dataclasses.is_dataclass(prior):
        return getattr(prior, "name", None), getattr(prior, "model_path", None)
    if isinstance(prior, str):
        return prior, getattr(cfg, "model_path", None)
    return None, None


def prompt_warning(prior: str | None, prompt: Any) -> str | None:
    """A one-line warning when a bundled prior gets a prompt naming none of the shapes it knows."""
    if prior not in BUNDLED_PRIORS or not isinstance(prompt, str):
        return None
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    if words & set(SHAPES) or words & {s + "s" for s in SHAPES}:
        return None
    return (f"warning: the bundled prior '{prior}' knows only the ShapeWorld shapes ({', '.join(SHAPES)}) and "
            f"the prompt names none of them; for other objects use a real prior: --prior "
            f"{'/'.join(REAL_PRIORS)} --model-path DIR (docs/real-models.md)")


def check_scene(inputs: dict, cfg: Any) -> None:
    """A scene input parses, its frame files stay inside it and it has the views asked for (no
    image is decoded)."""
    if inputs.get("scene") in (None, ""):
        return
    data = getattr(cfg, "data", None)
    scan_scene(Path(inputs["scene"]), downscale=getattr(data, "downscale", None), views=getattr(data, "views", None),
               allow_outside=getattr(data, "allow_outside_scene", False))


def _resolved(path: Path, what: str) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13)
        raise UserError(f"{path}: {what} is a symlink loop") from None


def check_input_files(inputs: dict) -> None:
    """The job's input files (image, mask) exist, are files and are no symlink loops."""
    for name in ("image", "mask"):
        value = inputs.get(name)
        if value in (None, ""):
            continue
        path = _resolved(Path(value), f"the --{name} file")
        if not path.is_file():
            raise UserError(f"{value}: the --{name} file {'is a folder' if path.is_dir() else 'does not exist'}")


def check_out(out: Path | None, root: Path | None) -> None:
    """`--out` (or the runs folder a new run goes under) can become a new run folder."""
    path, what = (Path(out), "--out") if out is not None else (root or runs_root(), "runs folder ($GEN3D_RUNS)")
    path = _resolved(path, what)
    blocking = blocking_file(path)
    if blocking is not None:
        where = "is a file" if blocking == path else f"lies under the file {blocking}"
        raise UserError(f"{path}: {what} {where}, not a folder")
    if out is not None and (path / MANIFEST).exists():
        raise UserError(f"{path} is already a run folder; use `gen3d resume {path}`")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{existing}: {what} is not writable")


def validate_job(job: Any, out: Path | None = None, root: Path | None = None, *, new_run: bool = True) -> list[str]:
    """Check everything about `job` that can be checked before anything is written; returns the
    warnings (one line each) to print and record in the manifest."""
    cfg = job.config
    check_seed(job.seed)
    check_limits(cfg)
    check_export(cfg)
    prior, model_path = prior_of(cfg)
    if prior is not None:
        check_model_folder(prior, model_path)
    check_input_files(job.inputs)
    check_scene(job.inputs, cfg)
    if new_run:
        check_out(out, root)
    if hasattr(cfg, "check"):
        cfg.check()  # what only this kind of job knows to check (the train job's model folders)
    warning = prompt_warning(prior, job.inputs.get("prompt"))
    return [warning] if warning else []
