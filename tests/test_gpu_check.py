"""scripts/gpu_check.sh's dry run: it names every step and exits 0 without a GPU."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def test_dry_run_prints_the_plan():
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pytest" in out.stdout and "bench gpu" in out.stdout and "bench fields" in out.stdout
