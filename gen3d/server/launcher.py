"""What `gen3d serve` does: take RUNS_DIR for this server, recover the queue, start the workers and uvicorn.

One server per RUNS_DIR (a lock file says so), because recovery assumes that a job marked running whose
worker is gone was cut short: on start, and every few seconds after, such jobs become `interrupted`,
both in the queue and in their run's manifest, so `gen3d resume RUN_DIR` can pick them up.

Each worker leads its own process group (its job runs in it too). On SIGTERM or Ctrl-C the server stops
the workers before it exits (they stop their jobs at a checkpoint), then kills whatever is left in their
groups; if the server is killed outright, each worker gets SIGTERM from the kernel (see `worker.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from gen3d.errors import UserError
from gen3d.server import runs
from gen3d.server.guards import MIN_TOKEN_CHARS, WILDCARD_HOSTS, AccessPolicy, allowed_hosts, is_loopback
from gen3d.server.jobqueue import QUEUE_FILE, JobQueue, QueuedJob
from gen3d.server.worker import STOP_GRACE_S

LOCK_FILE = Path(".gen3d-server") / "serve.lock"
MONITOR_S = 2.0
WORKER_STOP_S = STOP_GRACE_S + 10.0  # a worker first stops its job
GRACEFUL_SHUTDOWN_S = 3.0  # open progress streams (the viewer's) must not hold a stopping server
_TOKEN = re.compile(r"^[A-Za-z0-9._~-]+$")  # travels in a URL and a cookie unescaped


@dataclass
class ServeConfig:
    runs_dir: Path
    host: str = "127.0.0.1"
    port: int = 7860
    workers: int = 1
    ray: bool = False  # run queued jobs as Ray tasks (gen3d.server.raypool)
    ray_address: str | None = None  # the Ray cluster to join (None: a local instance)
    allow_hosts: tuple[str, ...] = ()  # Host names accepted beside the loopback names and --host
    token: str | None = None  # required on the API; None: generated when --host is not loopback
    allow_paths: tuple[Path, ...] = ()  # folders job options may name files in, beside the runs folder


def access_policy(cfg: ServeConfig) -> AccessPolicy:
    """The policy for `cfg`; a token is required (and generated if none is given) off loopback."""
    token = cfg.token
    if token is not None and (len(token) < MIN_TOKEN_CHARS or not _TOKEN.match(token)):
        raise UserError(f"--token: must be at least {MIN_TOKEN_CHARS} characters of letters, digits, '.', '_', "
                        f"'~' or '-'")
    if token is None and not is_loopback(cfg.host):
        token = secrets.token_urlsafe(24)
    for path in cfg.allow_paths:
        if not Path(path).is_dir():
            raise UserError(f"--allow-path: {path} is not a folder")
    return AccessPolicy(allowed_hosts=allowed_hosts(cfg.host, tuple(cfg.allow_hosts)), token=token,
                        extra_paths=tuple(Path(p).resolve() for p in cfg.allow_paths))


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


def public_url(host: str, port: int, token: str | None = None) -> str:
    """A URL that works from this machine, also when listening on all interfaces; with the token, which
    the viewer keeps (as a cookie) once opened."""
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    return url + (f"?token={token}" if token else "")


class WorkerPool:
    """`n` worker processes, restarted if one dies, stopped (with their jobs) on shutdown."""

    def __init__(self, runs_dir: Path, n: int, queue: JobQueue):
        self.runs_dir, self.n, self.queue = runs_dir, n, queue
        self.procs: list[subprocess.Popen] = []
        self.stopped = threading.Event()

    def _spawn(self) -> subprocess.Popen:
        """A worker told our pid (it may start after we are gone), in a new session: its own process group.

        The kernel's parent-death signal follows the thread that spawned the worker: the first ones come
        from the main thread, restarts from the monitor thread, which lives until `stop`."""
        return subprocess.Popen([sys.executable, "-m", "gen3d.server.worker", str(self.runs_dir),
                                 "--parent", str(os.getpid())], stdin=subprocess.DEVNULL, start_new_session=True)

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
        """SIGTERM each worker (it stops its job at a checkpoint), wait, then SIGKILL what is left of its group."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=WORKER_STOP_S)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group outlives its leader while a member lives
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


def _exit_on_signal(signum, frame) -> None:
    """SIGTERM/SIGHUP end the server through its `finally` (which stops the workers), not at once.

    uvicorn handles SIGTERM itself while it serves, but restores this handler and re-raises the signal
    when it is done, and a signal may come before it starts: the default action would skip the clean-up.
    """
    raise SystemExit(128 + signum)


def _uvicorn_server(app):
    """uvicorn that, when a signal stops it, first tells the progress streams to end (`app.state.closing`):
    an open stream would otherwise hold the shutdown until GRACEFUL_SHUTDOWN_S cancels it."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.closing.set()
            super().handle_exit(sig, frame)

    return Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                 timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))


def _announce(cfg: ServeConfig, policy: AccessPolicy, runs_dir: Path, port: int) -> None:
    print(public_url(cfg.host, port, policy.token), flush=True)
    where = "Ray task(s)" if cfg.ray else "worker(s)"
    print(f"gen3d serve: runs folder {runs_dir}, {cfg.workers} {where}; Ctrl-C stops", file=sys.stderr, flush=True)
    if policy.token:
        print("gen3d serve: the API needs the token in the URL above (the viewer keeps it once opened)",
              file=sys.stderr, flush=True)
    if cfg.host in WILDCARD_HOSTS and not cfg.allow_hosts:
        print(f"gen3d serve: only Host names {', '.join(policy.allowed_hosts)} are accepted; add --allow-host NAME "
              f"for each name or address clients use", file=sys.stderr, flush=True)


def serve(cfg: ServeConfig) -> None:
    from gen3d.server.app import create_app

    policy = access_policy(cfg)
    runs_dir = Path(cfg.runs_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_runs_dir(runs_dir)
    sock = bind(cfg.host, cfg.port)
    queue = JobQueue(runs_dir / QUEUE_FILE)
    for job in recover(queue, runs_dir):
        print(f"gen3d serve: job {job.id} ({job.run_id}) was cut short; marked interrupted", file=sys.stderr)
    app = create_app(runs_dir, policy=policy)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    pool = start_pool(cfg, runs_dir, queue)
    _announce(cfg, policy, runs_dir, sock.getsockname()[1])
    try:
        _uvicorn_server(app).run(sockets=[sock])
    finally:
        pool.stop()
        sock.close()
        lock.close()
