"""A worker process: claim the oldest queued job, run `gen3d <kind> ... --out RUN_DIR` for it in a child process,
record how it ended, repeat.

Run by `gen3d serve` (one per `--workers`), or by hand: `python -m gen3d.server.worker RUNS_DIR`.
The job runs in a child process so a crash or a hung job never takes the server down; the worker checks
in with the queue while it waits (heartbeat, cancel requests) and stops its job on SIGTERM/SIGINT or when
its parent server dies, marking it interrupted so `gen3d resume` can continue it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gen3d.server import runs
from gen3d.server.jobkinds import JOB_KINDS
from gen3d.server.jobqueue import QUEUE_FILE, JobQueue, QueuedJob, job_output_path

CLI = [sys.executable, "-m", "gen3d"]  # the same interpreter and package as the server
POLL_S = 0.5
STOP_GRACE_S = 20.0  # a training step must finish and checkpoint within this
ERROR_TAIL_CHARS = 2000
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Worker:
    def __init__(self, runs_dir: Path, poll_s: float = POLL_S, parent: int | None = None):
        self.runs_dir = Path(runs_dir).resolve()
        self.queue = JobQueue(self.runs_dir / QUEUE_FILE)
        self.poll_s = poll_s
        self.parent = os.getppid() if parent is None else parent
        self.stopping = False

    def request_stop(self, signum=None, frame=None) -> None:
        self.stopping = True

    def orphaned(self) -> bool:
        """The server that started this worker is gone (we were re-parented)."""
        return os.getppid() != self.parent

    def serve_forever(self) -> None:
        while not (self.stopping or self.orphaned()):
            job = self.queue.claim(os.getpid())
            if job is None:
                time.sleep(self.poll_s)
            else:
                self.run(job)

    def command(self, job: QueuedJob) -> list[str]:
        kind = JOB_KINDS[job.kind]
        return [*CLI, *kind.argv(job.options, self.runs_dir / job.run_id)]

    def run(self, job: QueuedJob) -> str:
        """Run one claimed job to its end; returns the final job status."""
        output = job_output_path(self.runs_dir, job.id)
        output.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GEN3D_RUNS": str(self.runs_dir), "PYTHONUNBUFFERED": "1"}
        with output.open("ab") as out:
            out.write(f"$ {' '.join(self.command(job))}\n".encode())
            out.flush()
            child = subprocess.Popen(self.command(job), stdout=out, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)
            stopped_by = self._wait(job, child)
        status = self._final_status(child.returncode, stopped_by)
        if status != "done":
            runs.set_status_if_unfinished(self.runs_dir / job.run_id, "interrupted")
        error = None if status == "done" else _tail(output)
        self.queue.finish(job.id, status, child.returncode, error)
        return status

    def _wait(self, job: QueuedJob, child: subprocess.Popen) -> str | None:
        """Wait for the child, checking in; returns 'cancel' or 'stop' when we had to end it."""
        while True:
            try:
                child.wait(timeout=self.poll_s)
                return None
            except subprocess.TimeoutExpired:
                pass
            cancel = self.queue.beat(job.id)
            reason = "cancel" if cancel else "stop" if self.stopping or self.orphaned() else None
            if reason:
                _terminate(child)
                return reason

    @staticmethod
    def _final_status(returncode: int, stopped_by: str | None) -> str:
        if stopped_by == "cancel":
            return "cancelled"
        if stopped_by == "stop" or returncode in (-signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL, 130):
            return "interrupted"
        return "done" if returncode == 0 else "failed"


def _terminate(child: subprocess.Popen) -> None:
    """SIGTERM (the job runner checkpoints and marks itself interrupted), then SIGKILL after a grace period."""
    child.terminate()
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def stop_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `signum` when our parent dies (Linux); False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-ERROR_TAIL_CHARS:] if path.is_file() else ""


def _parse(args: list[str]) -> tuple[Path, int | None] | None:
    if len(args) == 1:
        return Path(args[0]), None
    if len(args) == 3 and args[1] == "--parent" and args[2].isdigit():
        return Path(args[0]), int(args[2])
    return None


def main(argv: list[str] | None = None) -> int:
    parsed = _parse(sys.argv[1:] if argv is None else argv)
    if parsed is None:
        print("usage: python -m gen3d.server.worker RUNS_DIR [--parent PID]", file=sys.stderr)
        return 2
    worker = Worker(parsed[0], parent=parsed[1])
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    stop_with_parent(signal.SIGTERM)
    worker.serve_forever()  # returns at once if the parent died before the line above
    return 0


if __name__ == "__main__":
    sys.exit(main())
