"""Training under `torchrun`: joining the process group, and what ranks > 0 do.

Rank 0 runs the job through the ordinary job runner and alone writes the run folder; every other
rank follows it: it runs only the training stages (whose collectives need every rank), resumes
from rank 0's checkpoints, writes nothing, and meets rank 0 at a barrier after every stage.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from gen3d.runs import Job, StageContext
from gen3d.runs.checkpoint import load_checkpoint
from gen3d.runs.folder import CKPT_DIR, MANIFEST
from gen3d.runs.job import derive_seed


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank_and_world()


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def then_barrier(run: Callable[[StageContext], None]) -> Callable[[StageContext], None]:
    """Under torchrun, rank 0 waits at the end of each stage for the other ranks (see follow_job)."""

    def wrapped(ctx) -> None:
        run(ctx)
        if dist.is_initialized():
            dist.barrier()
    return wrapped


class FollowerContext:
    """What a stage sees on a rank > 0: rank 0's run folder to read, its own seeded generators,
    and a step loop that resumes from rank 0's checkpoint but never writes anything."""

    def __init__(self, job: Job, stage: str, path: Path, rank: int):
        self.job, self.stage, self.path = job, stage, Path(path)
        seed = derive_seed(job.seed, stage) + rank
        self.generator = torch.Generator().manual_seed(seed)
        self.np_rng = np.random.default_rng(seed)

    config = property(lambda self: self.job.config)
    inputs = property(lambda self: self.job.inputs)
    seed = property(lambda self: self.job.seed)

    def steps(self, total: int, *, every: int, state: Callable[[], dict], restore: Callable[[dict], None]):
        ckpt = load_checkpoint(self.path / CKPT_DIR / f"{self.stage}.pt")
        if ckpt is not None:
            restore(ckpt.state)
        yield from range(0 if ckpt is None else ckpt.step, total)

    def event(self, *args, **kwargs) -> None:
        pass

    log = add_artifact = set_metrics = event


def follow_job(job: Job, run_dir: Path, rank: int, training_stages: set[str]) -> None:
    """Rank > 0's side of a distributed job: join the training stages' collectives and wait at
    each stage's closing barrier for rank 0 (which alone prepares data and writes the run folder).

    Stage statuses are read before the first barrier, i.e. before rank 0 starts (or resumes), so
    both ranks skip exactly the same finished stages.
    """
    manifest = Path(run_dir) / MANIFEST
    done = set()
    if manifest.is_file():
        done = {s["name"] for s in json.loads(manifest.read_text())["stages"] if s["status"] == "done"}
    dist.barrier()
    for stage in job.stages:
        if stage.name in done:
            continue
        if stage.name in training_stages:
            stage.run(FollowerContext(job, stage.name, run_dir, rank))  # ends at the stage's barrier
        else:
            dist.barrier()
