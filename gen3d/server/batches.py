"""Batches in the viewer: every `RUNS_DIR/<batch>/batch.json` (written by `gen3d batch`) as a group of
jobs with its progress, so a batch reads as one item while it runs."""

from __future__ import annotations

import json
from pathlib import Path

from gen3d.batch.folder import BATCH_FILE, JOB_STATUSES


def summarize_batch(data: dict) -> dict:
    jobs = [{k: job.get(k) for k in ("id", "status", "seconds", "metrics", "error")} for job in data.get("jobs", [])]
    counts = {s: sum(j["status"] == s for j in jobs) for s in JOB_STATUSES}
    return {"id": data.get("id"), "jobs_file": data.get("jobs_file"), "updated": data.get("updated"),
            "total": len(jobs), "counts": counts, "progress": (counts["done"] + counts["failed"]) / max(len(jobs), 1),
            "jobs": jobs}


def list_batches(runs_dir: Path) -> list[dict]:
    """Newest first; a batch.json being replaced this instant is skipped until the next poll."""
    found = []
    for path in Path(runs_dir).glob(f"*/{BATCH_FILE}"):
        try:
            found.append((path.stat().st_mtime, summarize_batch(json.loads(path.read_text()))))
        except (OSError, ValueError):
            continue
    return [summary for _, summary in sorted(found, key=lambda item: -item[0])]
