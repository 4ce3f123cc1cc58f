"""The server's view of run folders (docs/CONVENTIONS.md; written by `gen3d.runs`): gallery rows, event
summaries, and the files a run may serve.

Everything the web server shows about a run comes through here, and so does every file it serves:
`resolve_file` admits only paths the manifest lists (plus a fixed allow-list) that stay inside the run
folder after resolving symlinks.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from gen3d.errors import UserError
from gen3d.runs import folder as folder_api
from gen3d.runs.folder import RunFolder, read_manifest  # UserError naming the file when missing, broken or unsupported

# Served for every run, whether or not the manifest lists them.
ALWAYS_SERVED = ("manifest.json", "events.jsonl", "log.txt")
TERMINAL_RUN_STATUSES = frozenset({"done", "failed", "interrupted"})
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
# Shown on gallery cards first when present; any other numeric metrics follow up to HEADLINE_METRICS.
PREFERRED_METRICS = ("psnr", "ssim", "lpips", "chamfer", "clip_score", "iou")
HEADLINE_METRICS = 4
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class RunNotFound(LookupError):
    """No run folder with a readable manifest under that id."""


class FileNotServed(LookupError):
    """The path is not one this run may serve (not listed, escaping, or missing)."""


def is_run_id(run_id: str) -> bool:
    """A run id is a single plain folder name: no separators, no dot-dot, no hidden names."""
    return bool(_RUN_ID.match(run_id)) and ".." not in run_id


def run_dir(runs_dir: Path, run_id: str) -> Path:
    """The folder of run `run_id`, which must be a real folder directly inside `runs_dir`."""
    if not is_run_id(run_id):
        raise RunNotFound(run_id)
    root = runs_dir.resolve()
    folder = (root / run_id).resolve()
    if folder.parent != root or not (folder / "manifest.json").is_file():
        raise RunNotFound(run_id)
    return folder


def read_events(folder: Path) -> list[dict]:
    """Complete event lines; a torn or malformed line is skipped, not fatal."""
    return [e for e in folder_api.read_events(folder) if isinstance(e, dict)]


def summarize_events(events: list[dict]) -> dict:
    """Per-stage progress and the latest loss/psnr: what a progress bar and a status line need."""
    stages: dict[str, dict] = {}
    for event in events:
        stage = stages.setdefault(str(event.get("stage", "")), {})
        for key in ("step", "total", "loss", "psnr", "eta_s", "message", "time"):
            if key in event:
                stage[key] = event[key]
    return {"count": len(events), "last": events[-1] if events else None, "stages": stages}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _epoch(value) -> float | None:
    """Stage start times may be epoch seconds or ISO 8601 strings."""
    if _number(value) is not None:
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _method(manifest: dict) -> str | None:
    """The method name wherever the pipeline recorded it (top level, inputs or config; a prior counts)."""
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    inputs = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
    for source in (manifest, inputs, config):
        for key in ("method", "prior"):
            value = source.get(key)
            if isinstance(value, dict):
                value = value.get("name")
            if isinstance(value, str) and value:
                return value
    return None


def headline_metrics(metrics) -> dict:
    if not isinstance(metrics, dict):
        return {}
    numeric = {k: v for k, v in metrics.items() if _number(v) is not None}
    ordered = [k for k in PREFERRED_METRICS if k in numeric] + [k for k in numeric if k not in PREFERRED_METRICS]
    return {k: numeric[k] for k in ordered[:HEADLINE_METRICS]}


def artifacts(manifest: dict) -> list[dict]:
    """The manifest's artifact entries that name a relative path (others are ignored, never served)."""
    items = manifest.get("artifacts")
    if not isinstance(items, list):
        return []
    return [a for a in items if isinstance(a, dict) and isinstance(a.get("path"), str) and _clean_relpath(a["path"])]


def file_url(run_id: str, rel_path: str) -> str:
    return f"/api/runs/{quote(run_id)}/files/{quote(rel_path)}"


def _thumbnail(run_id: str, manifest: dict) -> str | None:
    images = [a for a in artifacts(manifest) if a["path"].lower().endswith(IMAGE_SUFFIXES)]
    for role in ("views", "render", "turntable", "curve"):
        for item in images:
            if item.get("role") == role:
                return file_url(run_id, item["path"])
    return None


def frame_count(manifest: dict) -> int:
    """How many frames a 4D run has: distinct `frame` (else `time`) values of its meshes; 0 for a static run."""
    keys = {a.get("frame", a.get("time")) for a in artifacts(manifest) if a.get("role") in ("mesh", "pointcloud")}
    return sum(_number(k) is not None for k in keys)


def summarize_run(run_id: str, manifest: dict, updated: float) -> dict:
    """One gallery row: what a card shows and what the gallery sorts and filters on."""
    inputs = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
    stages = [s for s in manifest.get("stages") or [] if isinstance(s, dict)]
    seconds = [_number(s.get("seconds")) for s in stages]
    starts = [t for t in (_epoch(s.get("started")) for s in stages) if t is not None]
    return {
        "id": run_id,
        "kind": manifest.get("kind"),
        "status": manifest.get("status"),
        "inputs": inputs,
        "prompt": inputs.get("prompt"),
        "method": _method(manifest),
        "seed": manifest.get("seed"),
        "started": min(starts) if starts else None,
        "updated": updated,
        "duration_s": sum(s for s in seconds if s is not None) if any(s is not None for s in seconds) else None,
        "metrics": headline_metrics(manifest.get("metrics")),
        "frames": frame_count(manifest),
        "thumbnail": _thumbnail(run_id, manifest),
    }


def list_runs(runs_dir: Path) -> list[dict]:
    """Every run folder directly under `runs_dir`, newest first; unreadable manifests show as 'invalid'."""
    if not runs_dir.is_dir():
        return []
    rows = []
    for folder in runs_dir.iterdir():
        if not is_run_id(folder.name) or not (folder / "manifest.json").is_file():
            continue
        try:
            folder = run_dir(runs_dir, folder.name)
            updated = (folder / "manifest.json").stat().st_mtime
            rows.append(summarize_run(folder.name, read_manifest(folder), updated))
        except RunNotFound:
            continue  # a symlink leading out of runs_dir
        except (OSError, UserError) as exc:
            rows.append({"id": folder.name, "status": "invalid", "error": str(exc), "updated": None, "metrics": {}})
    rows.sort(key=lambda r: (r.get("updated") or 0, r["id"]), reverse=True)
    return rows


def _clean_relpath(rel: str) -> str | None:
    """`rel` as a normalised relative POSIX path, or None when it is absolute, escapes or is odd."""
    if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        return None
    parts = PurePosixPath(rel).parts
    if any(p in ("..", ".") for p in parts) or not parts:
        return None
    return "/".join(parts)


def resolve_file(folder: Path, manifest: dict, rel: str) -> Path:
    """The real file behind `rel`, if the run serves it: listed, inside the folder once resolved, a file."""
    clean = _clean_relpath(rel)
    listed = set(ALWAYS_SERVED) | {_clean_relpath(a["path"]) for a in artifacts(manifest)}
    if clean is None or clean not in listed:
        raise FileNotServed(rel)
    path = (folder / clean).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        raise FileNotServed(rel)
    return path


def set_status_if_unfinished(folder: Path, status: str) -> bool:
    """Mark a run whose process died (manifest still 'queued'/'running') as `status`; True if changed.

    The pipeline's runner writes every other status change; this covers a process killed before it
    could, so the gallery and `gen3d resume` see the truth.
    """
    try:
        run = RunFolder.open(folder)
    except UserError:
        return False
    if run.status not in ("queued", "running"):
        return False
    run.set_status(status)
    return True
