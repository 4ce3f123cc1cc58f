"""Helpers the job tests share."""

from pathlib import Path

from gen3d.runs import read_manifest


def hashes(run_dir: Path) -> dict[str, str]:
    """Artifact path -> sha256, as the manifest records them (what "identical runs" compares)."""
    return {a["path"]: a["sha256"] for a in read_manifest(run_dir)["artifacts"]}
