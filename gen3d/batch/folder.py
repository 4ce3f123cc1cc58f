"""The batch folder: `batch.json` plus one ordinary run folder per job (docs/scale-out.md).

Only the driver (`gen3d batch`) writes `batch.json`, atomically, so readers (the viewer, a second
shell) never see half a file. A job's state on disk is its run folder's manifest; `batch.json`
summarises it, and a re-run re-derives every status from the run folders, so nothing is lost when the
driver is killed between a job's end and the next rewrite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gen3d.batch.specs import JobSpec
from gen3d.errors import UserError
from gen3d.io import atomic_write_json
from gen3d.runs.folder import MANIFEST, now_iso

BATCH_FILE = "batch.json"
SCHEMA_VERSION = 1
JOB_STATUSES = ("pending", "running", "done", "failed", "interrupted")


def job_id(index: int, spec: JobSpec) -> str:
    """The job's run folder name: stable across re-runs of the same JOBS file."""
    return f"{index:03d}-{spec.kind}-{spec.slug}"


def run_state(run_dir: Path) -> dict:
    """What the run folder says of a job: status (pending when no manifest yet), seconds, metrics."""
    try:
        manifest = json.loads((run_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {"status": "pending", "seconds": 0.0, "metrics": {}, "remaining_estimate": None}
    stages = manifest.get("stages", [])
    status = {"queued": "pending"}.get(manifest.get("status"), manifest.get("status", "pending"))
    metrics = {k: v for k, v in manifest.get("metrics", {}).items() if isinstance(v, (int, float, bool))}
    return {"status": status, "seconds": round(sum(s["seconds"] for s in stages), 2), "metrics": metrics,
            "error": manifest.get("error"),
            "remaining_estimate": sum(s["estimated_seconds"] for s in stages if s["status"] != "done")}


@dataclass
class BatchFolder:
    path: Path
    data: dict

    @property
    def jobs(self) -> list[dict]:
        return self.data["jobs"]

    def run_dir(self, job: dict) -> Path:
        return self.path / job["run"]

    @classmethod
    def open_or_create(cls, path: Path, specs: list[JobSpec], estimates: list[float], source: Path) -> BatchFolder:
        """The batch in `path`; an existing one must hold the same jobs (a re-run continues it)."""
        path = Path(path).resolve()
        jobs = [{"id": job_id(i, s), "spec": s.to_json(), "run": job_id(i, s), "status": "pending",
                 "seconds": 0.0, "estimated_seconds": round(e, 2), "metrics": {}, "error": None}
                for i, (s, e) in enumerate(zip(specs, estimates))]
        existing = path / BATCH_FILE
        if existing.is_file():
            try:
                old = json.loads(existing.read_text())
            except ValueError as exc:
                raise UserError(f"{existing}: unreadable ({exc})") from None
            if [j["spec"] for j in old.get("jobs", [])] != [j["spec"] for j in jobs]:
                raise UserError(f"{existing}: this folder holds a different batch; choose another --out")
            jobs = [{**new, **{k: o[k] for k in ("status", "seconds", "metrics", "error") if k in o}}
                    for new, o in zip(jobs, old["jobs"])]
            folder = cls(path, {**old, "jobs": jobs})
        else:
            folder = cls(path, {"schema_version": SCHEMA_VERSION, "id": path.name, "jobs_file": str(source),
                                "created": now_iso(), "jobs": jobs})
        folder.refresh()
        return folder

    def refresh(self, jobs: list[dict] | None = None) -> None:
        """Statuses, seconds and metrics from the run folders (their manifests are the truth)."""
        for job in self.jobs if jobs is None else jobs:
            state = run_state(self.run_dir(job))
            job.update({k: state[k] for k in ("status", "seconds", "metrics")}, error=state.get("error"))
            job["remaining_estimate"] = state["remaining_estimate"]

    def counts(self) -> dict[str, int]:
        return {status: sum(j["status"] == status for j in self.jobs) for status in JOB_STATUSES}

    def write(self) -> None:
        self.data.update(updated=now_iso(), counts=self.counts())
        atomic_write_json(self.path / BATCH_FILE, self.data)


def read_batch(path: Path) -> dict:
    """A batch folder's `batch.json` (the viewer lists batches with it)."""
    return json.loads((Path(path) / BATCH_FILE).read_text())
