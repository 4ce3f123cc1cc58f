"""Run folders: `manifest.json`, `events.jsonl`, `log.txt`, artifacts (docs/run-folders.md).

The manifest is a plain JSON document because other processes (the web viewer, `gen3d runs`)
read it; every rewrite is atomic so a reader never sees half a file, even after a crash.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gen3d
from gen3d.errors import UserError
from gen3d.io import atomic_write_json, environment, sha256_file, slugify

SCHEMA_VERSION = 1
STATUSES = ("queued", "running", "done", "failed", "interrupted")
STAGE_STATUSES = ("pending", "running", "done", "failed", "interrupted")
ARTIFACT_ROLES = ("views", "checkpoint", "mesh", "pointcloud", "turntable", "render", "curve")
MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
LOG = "log.txt"
CKPT_DIR = "ckpt"


def now_iso() -> str:
    """UTC wall-clock time in ISO 8601, the manifest's time format."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def runs_root() -> Path:
    """Where new runs go: `$GEN3D_RUNS`, else `./runs`."""
    return Path(os.environ.get("GEN3D_RUNS") or "runs")


def new_run_dir(kind: str, slug: str, root: Path | None = None) -> Path:
    """Create and return `root/<YYYYmmdd-HHMMSS>-<kind>-<slug>`, suffixing -2, -3... on a clash."""
    root = runs_root() if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{slugify(slug)}"
    for n in range(1, 1000):
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"{root}: too many runs named {base}-*")


def jsonable(value: Any) -> Any:
    """JSON/YAML-safe copy: tuples become lists, paths strings, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def new_manifest(run_id: str, kind: str, inputs: dict, seed: int, config: dict,
                 stages: dict[str, float], device: str = "cpu", precision: str = "fp32") -> dict:
    """A fresh manifest (status `queued`); `stages` maps stage name -> estimated seconds; `device`
    and `precision` as resolved (gen3d.device), beside the name of the machine's GPU."""
    env = environment()
    return {
        "schema_version": SCHEMA_VERSION,
        "id": run_id,
        "kind": kind,
        "status": "queued",
        "created": now_iso(),
        "updated": now_iso(),
        "inputs": jsonable(inputs),
        "seed": seed,
        "config": jsonable(config),
        "gen3d_version": gen3d.__version__,
        "git_rev": env["git_rev"],
        "torch_version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "device": device,
        "device_name": env["device"] if device.startswith("cuda") else "cpu",
        "precision": precision,
        "stages": [{"name": name, "status": "pending", "started": None, "seconds": 0.0,
                    "estimated_seconds": round(float(est), 3)} for name, est in stages.items()],
        "artifacts": [],
        "metrics": {},
        "error": None,
    }


def read_manifest(run_dir: Path) -> dict:
    """The manifest of `run_dir`, or a UserError naming the file when it is missing or broken."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: not found (is {run_dir} a run folder?)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not valid JSON") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the manifest ({exc.strerror or type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{path}: unsupported manifest (schema_version must be {SCHEMA_VERSION})")
    check_manifest(manifest, path)
    return manifest


_NUMBER = (int, float)
# The fields every reader of a manifest relies on, and their JSON types.
MANIFEST_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "id": (str, "a string"), "kind": (str, "a string"), "status": (str, "a string"),
    "inputs": (dict, "an object"), "seed": (int, "an integer"), "config": (dict, "an object"),
    "num_threads": (int, "an integer"), "stages": (list, "a list"), "artifacts": (list, "a list"),
    "metrics": (dict, "an object"),
}
STAGE_FIELDS = {"name": (str, "a string"), "status": (str, "a string"), "seconds": (_NUMBER, "a number"),
                "estimated_seconds": (_NUMBER, "a number")}


def _check_fields(record: dict, fields: dict, where: str) -> None:
    for key, (types, description) in fields.items():
        if key not in record:
            raise UserError(f"{where}: field '{key}' is missing")
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise UserError(f"{where}: field '{key}' must be {description}, got {json.dumps(value)[:40]}")


def check_manifest(manifest: dict, path: Path) -> None:
    """The fields `resume`, `export` and `runs` read are there with the right types, so a damaged
    manifest is a one-line error naming the file and the field."""
    _check_fields(manifest, MANIFEST_FIELDS, str(path))
    if manifest["status"] not in STATUSES:
        raise UserError(f"{path}: field 'status' must be one of {', '.join(STATUSES)}, got {manifest['status']!r}")
    for i, stage in enumerate(manifest["stages"]):
        if not isinstance(stage, dict):
            raise UserError(f"{path}: field 'stages[{i}]' must be an object")
        _check_fields(stage, STAGE_FIELDS, f"{path}: stages[{i}]")
        if stage["status"] not in STAGE_STATUSES:
            raise UserError(f"{path}: field 'stages[{i}].status' must be one of {', '.join(STAGE_STATUSES)}")
    if not all(isinstance(a, dict) and isinstance(a.get("path"), str) for a in manifest["artifacts"]):
        raise UserError(f"{path}: field 'artifacts' must be a list of objects with a 'path'")


def read_events(run_dir: Path) -> list[dict]:
    """Every complete event line (a line still being written by a live run is skipped)."""
    path = Path(run_dir) / EVENTS
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            events.append(json.loads(line))
    return events


class RunFolder:
    """One run folder: owns its manifest (kept in memory, flushed atomically), events and log."""

    def __init__(self, path: Path, manifest: dict):
        # Absolute, so artifact paths built from it stay valid whatever the working directory.
        self.path = Path(path).absolute()
        self.manifest = manifest
        self.listeners: list[Callable[[dict], None]] = []

    @classmethod
    def create(cls, path: Path, manifest: dict) -> RunFolder:
        path = Path(path)
        if (path / MANIFEST).exists():
            raise UserError(f"{path} is already a run folder; use `gen3d resume {path}`")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, manifest)
        run.write_manifest()
        return run

    @classmethod
    def open(cls, path: Path) -> RunFolder:
        return cls(Path(path), read_manifest(path))

    @property
    def status(self) -> str:
        return self.manifest["status"]

    def write_manifest(self) -> None:
        self.manifest["updated"] = now_iso()
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def set_status(self, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        self.manifest["status"] = status
        self.manifest["error"] = error
        self.write_manifest()

    def stage_record(self, name: str) -> dict:
        for record in self.manifest["stages"]:
            if record["name"] == name:
                return record
        raise KeyError(name)

    def event(self, stage: str, step: int | None = None, total: int | None = None, **fields: Any) -> dict:
        """Append one line to events.jsonl (flushed at once, so live readers see it) and notify listeners."""
        record = {"time": round(time.time(), 3), "stage": stage, "step": step, "total": total}
        record.update({k: v for k, v in fields.items() if v is not None})
        with open(self.path / EVENTS, "a") as handle:
            handle.write(json.dumps(jsonable(record)) + "\n")
        for listener in self.listeners:
            listener(record)
        return record

    def log(self, message: str) -> None:
        with open(self.path / LOG, "a") as handle:
            handle.write(f"{now_iso()} {message}\n")

    def add_artifact(self, path: Path, role: str, stage: str | None, **meta: Any) -> dict:
        """Record a written file (relative path, size, sha256); re-adding a path replaces its entry.

        `meta` carries extra fields such as `up: "z"` for meshes or `time` for 4D frames.
        """
        if role not in ARTIFACT_ROLES:
            raise ValueError(f"unknown artifact role {role!r}; use one of {ARTIFACT_ROLES}")
        full = Path(path) if Path(path).is_absolute() else self.path / path
        rel = full.resolve().relative_to(self.path.resolve()).as_posix()
        entry = {"path": rel, "role": role, "stage": stage, "bytes": full.stat().st_size,
                 "sha256": sha256_file(full), **jsonable(meta)}
        artifacts = self.manifest["artifacts"]
        for i, old in enumerate(artifacts):
            if old["path"] == rel:
                artifacts[i] = entry
                break
        else:
            artifacts.append(entry)
        return entry

    def artifacts(self, role: str | None = None) -> list[dict]:
        return [a for a in self.manifest["artifacts"] if role is None or a["role"] == role]

    def set_metrics(self, **metrics: Any) -> None:
        self.manifest["metrics"].update(jsonable(metrics))

    def checkpoint_path(self, stage: str) -> Path:
        return self.path / CKPT_DIR / f"{stage}.pt"
