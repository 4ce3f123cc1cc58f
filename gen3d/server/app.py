"""The FastAPI application: the JSON API of docs/api.md and the built viewer from `static/`.

Every error leaves as JSON `{"error": "<one line>"}` with a 4xx status (500 only for a server bug, and
then without a traceback); the handlers below are the only place that turns exceptions into responses.
"""

from __future__ import annotations

import logging
import mimetypes
import threading
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Path as PathParam, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from gen3d.errors import UserError
from gen3d.server import runs
from gen3d.server.batches import list_batches
from gen3d.server.guards import AccessGuard, AccessPolicy, RequestGuard, error_response
from gen3d.server.jobkinds import JOB_KINDS, CheckContext, check_options, run_id_for
from gen3d.server.jobqueue import (JOB_STATUSES, QUEUE_FILE, TERMINAL_JOB_STATUSES, JobQueue, QueuedJob,
                                   job_output_path)
from gen3d.server.stream import progress_stream
from gen3d.server.submissions import read_submission
from gen3d.server.uploads import MAX_UPLOAD_BYTES, Upload, UploadTooLarge, save_upload
from gen3d.settings import configs_dir

STATIC_DIR = Path(__file__).parent / "static"
# Multipart framing and the option fields ride on top of the image itself.
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 256 * 1024
MAX_OUTPUT_CHARS = 64 * 1024
# SQLite's integer range: a larger id is no job, and must not reach the database as an overflow.
JobId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
log = logging.getLogger("gen3d.server")
mimetypes.add_type("model/gltf-binary", ".glb")
mimetypes.add_type("model/gltf+json", ".gltf")
mimetypes.add_type("application/x-ndjson", ".jsonl")


def registered_commands() -> set[str]:
    """The `gen3d` subcommands this installation has; a job kind needs its command to exist."""
    import typer.main

    from gen3d import cli

    cli.register_commands()
    return set(typer.main.get_command(cli.app).commands)


def _shown(text: str, limit: int = 80) -> str:
    """A client's id or path as quoted back in an error: never the whole of a 5,000-character one."""
    return text if len(text) <= limit else text[:limit] + "..."


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(UploadTooLarge)
    async def too_large(request: Request, exc: UploadTooLarge):
        return error_response(413, str(exc))

    @app.exception_handler(UserError)
    async def bad_input(request: Request, exc: UserError):
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def server_bug(request: Request, exc: Exception):
        log.exception("unhandled error for %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")


def _job_json(job: QueuedJob) -> dict:
    return {**job.to_json(), "stream": f"/api/jobs/{job.id}/stream"}


def readable_roots(runs_dir: Path, policy: AccessPolicy) -> tuple[Path, ...]:
    """The folders job options may name files in: the runs folder (uploads are inside it), the bundled
    configs (when this checkout has them) and the operator's `--allow-path` folders."""
    try:
        bundled = (configs_dir().resolve(),)
    except UserError:
        bundled = ()
    return (runs_dir, *bundled, *(Path(p).resolve() for p in policy.extra_paths))


def create_app(runs_dir: Path, available: set[str] | None = None, policy: AccessPolicy | None = None) -> FastAPI:
    """The server for `runs_dir`; `available` names the CLI commands jobs may run (default: detected);
    `policy` says which hosts, token and extra folders it admits (default: loopback only, no token)."""
    runs_dir = Path(runs_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    policy = AccessPolicy() if policy is None else policy
    queue = JobQueue(runs_dir / QUEUE_FILE)
    available = registered_commands() if available is None else set(available)
    check_ctx = CheckContext(runs_dir=runs_dir, cwd=Path.cwd(), roots=readable_roots(runs_dir, policy))

    app = FastAPI(title="gen3d", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.closing = threading.Event()  # set by the launcher when a signal stops the server
    app.add_middleware(RequestGuard, max_body=MAX_BODY_BYTES)
    app.add_middleware(AccessGuard, policy=policy)  # added last: runs first
    _install_error_handlers(app)

    @app.get("/api/health")
    def health() -> dict:
        return {"ok": True, "runs_dir": str(runs_dir)}

    @app.get("/api/kinds")
    def kinds() -> dict:
        return {"kinds": [kind.spec(name in available) for name, kind in JOB_KINDS.items()]}

    @app.get("/api/batches")
    def batches() -> dict:
        return {"batches": list_batches(runs_dir)}

    _add_run_routes(app, runs_dir)
    _add_job_routes(app, runs_dir, queue, available, check_ctx)

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def unknown_api(rest: str):
        raise HTTPException(404, f"no API endpoint /api/{_shown(rest)}")

    if (STATIC_DIR / "index.html").is_file():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="viewer")
    else:
        log.warning("the viewer is not built (%s missing); run scripts/build_viewer.sh", STATIC_DIR / "index.html")
    return app


def _add_run_routes(app: FastAPI, runs_dir: Path) -> None:
    """The run folders: list, one run, its events, its files and its live progress."""

    def folder_of(run_id: str) -> Path:
        try:
            return runs.run_dir(runs_dir, run_id)
        except runs.RunNotFound:
            raise HTTPException(404, f"no run '{_shown(run_id)}'") from None

    def manifest_of(folder: Path) -> dict:
        try:
            return runs.read_manifest(folder)
        except UserError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.get("/api/runs")
    def list_runs() -> dict:
        return {"runs": runs.list_runs(runs_dir)}

    @app.get("/api/runs/{run_id}")
    def get_run(run_id: str) -> dict:
        folder = folder_of(run_id)
        manifest = manifest_of(folder)
        files = [{**item, "url": runs.file_url(run_id, item["path"]), "exists": (folder / item["path"]).is_file()}
                 for item in runs.artifacts(manifest)]
        summary = runs.summarize_run(run_id, manifest, (folder / "manifest.json").stat().st_mtime)
        return {"id": run_id, "summary": summary, "manifest": manifest, "files": files,
                "events": runs.summarize_events(runs.read_events(folder)),
                "log": runs.file_url(run_id, "log.txt") if (folder / "log.txt").is_file() else None}

    @app.get("/api/runs/{run_id}/events")
    def get_events(run_id: str, since: int = 0) -> dict:
        events = runs.read_events(folder_of(run_id))
        return {"events": events[max(since, 0):], "count": len(events)}

    @app.get("/api/runs/{run_id}/files/{rel_path:path}")
    def get_file(run_id: str, rel_path: str):
        folder = folder_of(run_id)
        try:
            path = runs.resolve_file(folder, manifest_of(folder), rel_path)
        except runs.FileNotServed:
            raise HTTPException(404, f"run '{run_id}' has no file '{_shown(rel_path)}' to serve") from None
        return FileResponse(path)

    @app.get("/api/runs/{run_id}/stream")
    def stream_run(run_id: str, request: Request, since: int = 0):
        folder = folder_of(run_id)

        def status() -> dict | None:
            try:
                return {"status": runs.read_manifest(folder).get("status")}
            except UserError:
                return None

        since = _resume_point(request, since)
        return _sse(progress_stream(request, lambda: folder, status, runs.TERMINAL_RUN_STATUSES, since))


def _add_job_routes(app: FastAPI, runs_dir: Path, queue: JobQueue, available: set[str],
                    check_ctx: CheckContext) -> None:
    """The job queue: submit (options checked here), list, get, cancel, output and live progress."""

    def job_of(job_id: int) -> QueuedJob:
        job = queue.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @app.post("/api/jobs", status_code=201)
    async def submit_job(request: Request) -> dict:
        kind_name, raw = await read_submission(request)
        kind = JOB_KINDS.get(kind_name)
        if kind is None:
            raise UserError(f"kind: unknown job kind '{_shown(kind_name, 60)}'; valid: {', '.join(JOB_KINDS)}")
        if kind.name not in available:
            raise UserError(f"kind: '{kind.name}' is not available here (no `gen3d {kind.name}` command)")
        options = check_options(kind, raw, check_ctx)
        options = {k: str(save_upload(runs_dir, v)) if isinstance(v, Upload) else v for k, v in options.items()}
        if kind.reuses_run and any(j.run_id == options[kind.slug_from] for j in queue.list("queued") +
                                   queue.list("running")):
            raise HTTPException(409, f"run '{options[kind.slug_from]}' already has a queued or running job")
        job = queue.submit(kind.name, options, lambda job_id: run_id_for(kind, options, job_id))
        return _job_json(job)

    @app.get("/api/jobs")
    def list_jobs(status: str | None = None) -> dict:
        if status is not None and status not in JOB_STATUSES:
            raise UserError(f"status: unknown job status '{status[:60]}'; valid: {', '.join(JOB_STATUSES)}")
        return {"jobs": [_job_json(j) for j in queue.list(status)]}

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: JobId) -> dict:
        return _job_json(job_of(job_id))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel_job(job_id: JobId) -> dict:
        job_of(job_id)
        return _job_json(queue.cancel(job_id))

    @app.get("/api/jobs/{job_id}/output")
    def job_output(job_id: JobId) -> PlainTextResponse:
        job_of(job_id)
        path = job_output_path(runs_dir, job_id)
        text = path.read_text(errors="replace")[-MAX_OUTPUT_CHARS:] if path.is_file() else ""
        return PlainTextResponse(text)

    @app.get("/api/jobs/{job_id}/stream")
    def stream_job(job_id: JobId, request: Request, since: int = 0):
        job_of(job_id)

        def status() -> dict | None:
            job = queue.get(job_id)
            return _job_json(job) if job else None

        def folder() -> Path | None:
            job = queue.get(job_id)
            return runs_dir / job.run_id if job and job.status != "queued" else None

        since = _resume_point(request, since)
        return _sse(progress_stream(request, folder, status, TERMINAL_JOB_STATUSES, since))


def _resume_point(request: Request, since: int) -> int:
    """An EventSource reconnecting sends the last event id it saw; continue after it."""
    last = request.headers.get("last-event-id", "")
    return int(last) + 1 if last.isascii() and last.isdigit() and len(last) < 19 else max(since, 0)


def _sse(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
