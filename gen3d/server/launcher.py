"""What `gen3d serve` does: take RUNS_DIR for this server, recover the queue, start the workers and uvicorn.

One server per RUNS_DIR (a lock file says so), because recovery assumes that a job marked running whose
worker is gone was cut short: on start, and every few seconds after, such jobs become `interrupted`,
both in the queue and in their run's manifest, so `gen3d resume RUN_DIR` can pick them up.
"""

from __future__ import annotations

import fcntl
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from gen3d.errors import UserError
from gen3d.server import runs
from gen3d.server.jobqueue import QUEUE_FILE, JobQueue, QueuedJob
from gen3d.server.worker import STOP_GRACE_S

LOCK_FILE = Path(".gen3d-server") / "serve.lock"
MONITOR_S = 2.0
WORKER_STOP_S = STOP_GRACE_S + 10.0  # a worker first stops its job


@dataclass
class ServeConfig:
    runs_dir: Path
    host: str = "127.0.0.1"
    port: int = 7860
    workers: int = 1
    ray: bool = False  # run queued jobs as Ray tasks (gen3d.server.raypool)
    ray_address: str | None = None  # the Ray cluster to join (None: a local instance)


def recover(queue: JobQueue, runs_dir: Path) -> list[QueuedJob]:
    """Interrupt running jobs whose worker died; their manifests say so too."""
    stale = queue.interrupt_stale()
    for job in stale:
        runs.set_status_if_unfinished(runs_dir / job.run_id, "interrupted")
    return stale


def lock_runs_dir(runs_dir: Path):
    """An exclusive lock held for the server's lifetime (released by the OS if it dies)."""
    path = runs_dir / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"{runs_dir}: another `gen3d serve` is already serving this runs folder") from None
    return handle


def bind(host: str, port: int) -> socket.socket:
    """Listen before printing the URL, so the URL works the moment it is printed (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"--host/--port: cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(128)
    return sock


def public_url(host: str, port: int) -> str:
    """A URL that works from this machine, also when listening on all interfaces."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class WorkerPool:
    """`n` worker processes, restarted if one dies, stopped (with their jobs) on shutdown."""

    def __init__(self, runs_dir: Path, n: int, queue: JobQueue):
        self.runs_dir, self.n, self.queue = runs_dir, n, queue
        self.procs: list[subprocess.Popen] = []
        self.stopped = threading.Event()

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "gen3d.server.worker", str(self.runs_dir)],
                                stdin=subprocess.DEVNULL)

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.n)]
        threading.Thread(target=self._monitor, name="gen3d-workers", daemon=True).start()

    def _monitor(self) -> None:
        while not self.stopped.wait(MONITOR_S):
            recover(self.queue, self.runs_dir)
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self.stopped.is_set():
                    print(f"gen3d serve: worker {proc.pid} exited ({proc.returncode}); restarting it", file=sys.stderr)
                    self.procs[i] = self._spawn()

    def stop(self) -> None:
        self.stopped.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=WORKER_STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_pool(cfg: ServeConfig, runs_dir: Path, queue: JobQueue):
    """Local worker processes, or with `--ray` the dispatcher that runs queued jobs as Ray tasks."""
    if cfg.ray:
        from gen3d.server.raypool import RayPool

        pool = RayPool(runs_dir, cfg.workers, queue, cfg.ray_address)
    else:
        pool = WorkerPool(runs_dir, cfg.workers, queue)
    pool.start()
    return pool


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    from gen3d.server.app import create_app

    runs_dir = Path(cfg.runs_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_runs_dir(runs_dir)
    sock = bind(cfg.host, cfg.port)
    queue = JobQueue(runs_dir / QUEUE_FILE)
    for job in recover(queue, runs_dir):
        print(f"gen3d serve: job {job.id} ({job.run_id}) was cut short; marked interrupted", file=sys.stderr)
    app = create_app(runs_dir)
    pool = start_pool(cfg, runs_dir, queue)
    port = sock.getsockname()[1]
    print(public_url(cfg.host, port), flush=True)
    where = "Ray task(s)" if cfg.ray else "worker(s)"
    print(f"gen3d serve: runs folder {runs_dir}, {cfg.workers} {where}; Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
    finally:
        pool.stop()
        sock.close()
        lock.close()
