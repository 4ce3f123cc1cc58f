"""Run folders, checkpoints and the job runner shared by every pipeline (docs/run-folders.md)."""

from gen3d.runs.checkpoint import Checkpoint
from gen3d.runs.folder import ARTIFACT_ROLES, RunFolder, read_events, read_manifest, runs_root
from gen3d.runs.job import Job, Stage, StageContext, StopRequested, dry_run, resume_job, run_job

__all__ = [
    "ARTIFACT_ROLES", "Checkpoint", "Job", "RunFolder", "Stage", "StageContext", "StopRequested",
    "dry_run", "read_events", "read_manifest", "resume_job", "run_job", "runs_root",
]
