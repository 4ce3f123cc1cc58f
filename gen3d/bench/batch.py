"""`gen3d bench batch`: N text-to-3d jobs (CI preset) as N sequential `gen3d text-to-3d` commands, as
`gen3d batch --backend local --jobs 2` and as `gen3d batch --backend ray --jobs 2` (a local Ray
instance), all in one run so the ratios compare like with like; plus the Ray backend's overhead per
job (task submitted to result, for a job that is already done, worker and modules warm).

Each variant runs in its own processes, as a user would run it, so the sequential commands pay for
loading torch and the prior once per job and the batches once per worker. `--quick`: 4 jobs.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gen3d.batch.backends import connect_ray
from gen3d.batch.folder import read_batch
from gen3d.batch.task import Task, run_task
from gen3d.settings import configs_dir

PROMPTS = ("a red sphere", "a blue cube", "a green cone", "a yellow torus")
OVERHEAD_TASKS = 8
CLI = [sys.executable, "-m", "gen3d"]


def _jobs(n: int) -> list[dict]:
    return [{"prompt": PROMPTS[i % len(PROMPTS)], "seed": i // len(PROMPTS)} for i in range(n)]


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _sequential(jobs: list[dict], config: Path, root: Path) -> float:
    return sum(_timed([*CLI, "text-to-3d", job["prompt"], "--seed", str(job["seed"]), "--config", str(config),
                       "--out", str(root / f"seq-{i}")]) for i, job in enumerate(jobs))


def _batch(jobs_file: Path, out: Path, backend: str) -> float:
    seconds = _timed([*CLI, "batch", str(jobs_file), "--out", str(out), "--backend", backend, "--jobs", "2"])
    if any(j["status"] != "done" for j in read_batch(out)["jobs"]):
        raise RuntimeError(f"{out}: a job did not finish")
    return seconds


def ray_overhead(done_batch: Path) -> float:
    """Mean seconds from submitting a Ray task to its result, for a finished job (nothing to compute)."""
    ray = connect_ray(None)
    try:
        remote = ray.remote(run_task).options(num_cpus=1)
        job = read_batch(done_batch)["jobs"][0]
        task = Task(job["spec"], str(done_batch / job["run"]), 1)
        ray.get(remote.remote(task))  # warm: a worker with gen3d imported
        times = []
        for _ in range(OVERHEAD_TASKS):
            started = time.perf_counter()
            ray.get(remote.remote(task))
            times.append(time.perf_counter() - started)
        return statistics.mean(times)
    finally:
        ray.shutdown()


def run(quick: bool = False, out_dir: Path | None = None) -> list[dict]:
    jobs = _jobs(4 if quick else 16)
    config = configs_dir() / "ci" / "text-to-3d.yaml"
    with tempfile.TemporaryDirectory(prefix="gen3d-bench-batch-") as tmp:
        root = Path(tmp)
        jobs_file = root / "jobs.jsonl"
        jobs_file.write_text("".join(json.dumps({**job, "config": str(config)}) + "\n" for job in jobs))
        sequential = _sequential(jobs, config, root)
        local = _batch(jobs_file, root / "local", "local")
        ray = _batch(jobs_file, root / "ray", "ray")
        overhead = ray_overhead(root / "ray")
    rows = [{"method": "sequential commands", "jobs": len(jobs), "seconds": round(sequential, 1), "ratio": 1.0},
            {"method": "batch --backend local --jobs 2", "jobs": len(jobs), "seconds": round(local, 1),
             "ratio": round(local / sequential, 3)},
            {"method": "batch --backend ray --jobs 2", "jobs": len(jobs), "seconds": round(ray, 1),
             "ratio": round(ray / sequential, 3), "vs_local": round(ray / local, 3)},
            {"method": "ray overhead per job", "seconds": round(overhead, 3)}]
    return rows
