"""Where batch jobs run: a local process pool (default) or Ray. Both hand back
`concurrent.futures.Future`s of `run_task`'s result, so the driver is the same for both.

- local: `--jobs N` spawned processes; each keeps its loaded priors (`cached_prior`) for all its jobs.
- ray: each job is a Ray task with declared `num_cpus`/`num_gpus` and `max_retries`, so the job of a
  killed worker is run again and continues from its checkpoints. Ray's task workers are long-lived
  processes, so their loaded priors are reused across tasks too. Results go to the batch folder,
  which must be on a file system every node mounts at the same path (docs/scale-out.md).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from types import ModuleType

import torch

from gen3d.batch.task import Task, run_task
from gen3d.errors import UserError

RAY_INSTALL = "the Ray backend needs ray: pip install 'gen3d[cluster]' (or pip install 'ray>=2.9')"
RAY_RETRIES = 3  # a job whose worker died is run again this often, continuing from its checkpoints
LOCAL_OBJECT_STORE = 200 * 1024**2  # bytes; jobs pass only small dicts, their files go to the batch folder


@dataclass(frozen=True)
class BackendConfig:
    name: str = "local"  # local or ray
    jobs: int = 0  # jobs at once (0: one per core)
    ray_address: str | None = None  # None: start a local Ray instance
    gpus_per_job: float = 0.0


def plan_slots(jobs: int, cores: int | None = None) -> tuple[int, int]:
    """(jobs at once, threads per job) with jobs x threads <= cores."""
    cores = cores or os.cpu_count() or 1
    jobs = jobs if jobs > 0 else cores
    return jobs, max(1, cores // jobs)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


class LocalBackend:
    def __init__(self, jobs: int, threads: int):
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(threads,))

    def submit(self, task: Task) -> Future:
        return self.pool.submit(run_task, task)

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=True, cancel_futures=cancel)


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise UserError(RAY_INSTALL) from None
    return ray


def connect_ray(address: str | None) -> ModuleType:
    """Join the cluster at `address`, or start a local instance with this machine's cores."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address or "local", num_cpus=None if address else os.cpu_count(),
                 object_store_memory=None if address else LOCAL_OBJECT_STORE,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


class RayBackend:
    def __init__(self, address: str | None, threads: int, gpus: float):
        self.ray = connect_ray(address)
        self.remote = self.ray.remote(run_task).options(num_cpus=threads, num_gpus=gpus, max_retries=RAY_RETRIES,
                                                        retry_exceptions=False)

    def submit(self, task: Task) -> Future:
        return self.remote.remote(task).future()

    def close(self, cancel: bool = False) -> None:
        self.ray.shutdown()


Backend = LocalBackend | RayBackend


def open_backend(cfg: BackendConfig, jobs: int, threads: int) -> Backend:
    if cfg.name == "local":
        return LocalBackend(jobs, threads)
    if cfg.name == "ray":
        return RayBackend(cfg.ray_address, threads, cfg.gpus_per_job)
    raise UserError(f"--backend must be local or ray, got '{cfg.name}'")
