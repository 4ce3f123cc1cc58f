"""The job queue: one SQLite table in RUNS_DIR/queue.sqlite3, shared by the server and its workers.

SQLite gives the two properties the queue needs without a broker: it survives restarts (the file is the
queue), and `BEGIN IMMEDIATE` serialises writers across processes, so two workers never claim one job
and concurrent submissions never lose or duplicate one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

QUEUE_FILE = "queue.sqlite3"
JOB_OUTPUT_DIR = Path(".gen3d-server") / "jobs"
JOB_STATUSES = ("queued", "running", "done", "failed", "interrupted", "cancelled")
TERMINAL_JOB_STATUSES = frozenset({"done", "failed", "interrupted", "cancelled"})
# A running job whose worker has not checked in for this long is presumed dead (see `interrupt_stale`).
STALE_AFTER_S = 30.0
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    options TEXT NOT NULL,
    status TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    exit_code INTEGER,
    error TEXT,
    worker_pid INTEGER,
    heartbeat REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id);
"""


@dataclass
class QueuedJob:
    id: int
    kind: str
    options: dict
    status: str
    run_id: str
    created: float
    started: float | None
    finished: float | None
    exit_code: int | None
    error: str | None
    worker_pid: int | None
    heartbeat: float | None
    cancel_requested: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> QueuedJob:
        data = dict(row)
        data["options"] = json.loads(data["options"])
        data["cancel_requested"] = bool(data["cancel_requested"])
        return cls(**data)

    def to_json(self) -> dict:
        data = asdict(self)
        del data["heartbeat"], data["worker_pid"]
        return data


def job_output_path(runs_dir: Path, job_id: int) -> Path:
    """Where a worker keeps the job's stdout/stderr (the CLI's own errors, before any run folder exists)."""
    return runs_dir / JOB_OUTPUT_DIR / f"{job_id}.log"


def pid_alive(pid: int | None) -> bool:
    """Whether a worker process still runs; a zombie (killed, not yet reaped, e.g. orphaned in a
    container whose init never reaps) counts as dead."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


class JobQueue:
    """All queue operations; each opens its own short-lived connection, so any thread or process may call."""

    def __init__(self, path: Path):
        self.path = Path(path)
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            db.executescript(_SCHEMA + f"PRAGMA user_version = {_SCHEMA_VERSION};")
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout = 30000")
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def submit(self, kind: str, options: dict, run_id: Callable[[int], str]) -> QueuedJob:
        """Queue a job; `run_id(job_id)` names its run folder (the id makes simultaneous names unique)."""
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO jobs (kind, options, status, run_id, created) VALUES (?, ?, 'queued', '', ?)",
                (kind, json.dumps(options, sort_keys=True), time.time()),
            )
            job_id = cur.lastrowid
            db.execute("UPDATE jobs SET run_id = ? WHERE id = ?", (run_id(job_id), job_id))
            return QueuedJob.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def get(self, job_id: int) -> QueuedJob | None:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return QueuedJob.from_row(row) if row else None

    def list(self, status: str | None = None, limit: int = 500) -> list[QueuedJob]:
        """Newest first."""
        query, args = "SELECT * FROM jobs", ()
        if status is not None:
            query, args = query + " WHERE status = ?", (status,)
        with self._transaction() as db:
            rows = db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [QueuedJob.from_row(r) for r in rows]

    def claim(self, worker_pid: int) -> QueuedJob | None:
        """Take the oldest queued job for this worker, atomically across processes."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', started = ?, heartbeat = ?, worker_pid = ? WHERE id = ?",
                (now, now, worker_pid, row["id"]),
            )
            return QueuedJob.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def beat(self, job_id: int) -> bool:
        """The worker is alive and still running `job_id`; returns whether a cancel was requested."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET heartbeat = ? WHERE id = ?", (time.time(), job_id))
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def finish(self, job_id: int, status: str, exit_code: int | None = None, error: str | None = None) -> None:
        if status not in TERMINAL_JOB_STATUSES:
            raise ValueError(f"not a final job status: {status}")
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET status = ?, finished = ?, exit_code = ?, error = ? WHERE id = ? AND status = 'running'",
                (status, time.time(), exit_code, error, job_id),
            )

    def cancel(self, job_id: int) -> QueuedJob | None:
        """A queued job is cancelled at once; a running one is flagged and its worker stops it."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET status = 'cancelled', finished = ? WHERE id = ? AND status = 'queued'",
                (time.time(), job_id),
            )
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (job_id,))
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return QueuedJob.from_row(row) if row else None

    def interrupt_stale(self, stale_after_s: float = STALE_AFTER_S) -> list[QueuedJob]:
        """Mark running jobs whose worker is gone (dead pid or no heartbeat lately) as interrupted."""
        cutoff = time.time() - stale_after_s
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM jobs WHERE status = 'running'").fetchall()
            stale = [QueuedJob.from_row(r) for r in rows if not pid_alive(r["worker_pid"]) or (r["heartbeat"] or 0) < cutoff]
            for job in stale:
                db.execute(
                    "UPDATE jobs SET status = 'interrupted', finished = ?, error = ? WHERE id = ?",
                    (time.time(), "the worker stopped while the job was running; resume with `gen3d resume`", job.id),
                )
        return stale
