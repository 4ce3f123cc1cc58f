"""The job server's JSON API: runs, files (and what it refuses to serve), uploads, validation, the queue.

In-process tests use FastAPI's TestClient; path traversal, concurrency and restarts go through a live
`gen3d serve` so raw request paths, threads and processes are real.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from viewer_helpers import live_server, make_moving_box_run, make_run, wait_for

from gen3d.server.app import create_app
from gen3d.server.guards import AccessPolicy
from gen3d.server.jobkinds import JOB_KINDS
from gen3d.server.jobqueue import QUEUE_FILE, JobQueue
from gen3d.server.uploads import MAX_UPLOAD_BYTES
from gen3d.settings import data_dir

ALL_KINDS = set(JOB_KINDS)
LOOPBACK = "http://127.0.0.1"  # TestClient's own 'testserver' is not an allowed Host


def png_bytes(size=(16, 12), color=(10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_runs(root: Path) -> Path:
    root.mkdir()
    make_run(root, "20250101-000000-text-to-3d-box", inputs={"prompt": "a blue box"}, metrics={"psnr": 25.5, "chamfer": 0.02})
    make_run(root, "20250102-000000-reconstruct-fern", kind="reconstruct", status="failed",
             inputs={"scene": "/data/fern"}, glb=False)
    return root


@pytest.fixture()
def runs_dir(tmp_path: Path) -> Path:
    return make_runs(tmp_path / "runs")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One live server (no workers: jobs stay queued) for the tests that need real HTTP."""
    with live_server(make_runs(tmp_path_factory.mktemp("live") / "runs"), workers=0) as server:
        yield server


@pytest.fixture()
def client(runs_dir: Path) -> TestClient:
    return TestClient(create_app(runs_dir, available=ALL_KINDS), base_url=LOOPBACK)


# -- runs -----------------------------------------------------------------------------------------------

def test_lists_runs_with_summary_fields(client: TestClient):
    runs = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert set(runs) == {"20250101-000000-text-to-3d-box", "20250102-000000-reconstruct-fern"}
    box = runs["20250101-000000-text-to-3d-box"]
    assert (box["kind"], box["status"], box["prompt"], box["method"]) == ("text-to-3d", "done", "a blue box", "test")
    assert box["duration_s"] == pytest.approx(3.0)
    assert box["metrics"] == {"psnr": 25.5, "chamfer": 0.02}
    assert box["thumbnail"] == "/api/runs/20250101-000000-text-to-3d-box/files/views/view_000.png"
    assert runs["20250102-000000-reconstruct-fern"]["status"] == "failed"


def test_run_detail_events_and_files(client: TestClient, runs_dir: Path):
    run_id = "20250101-000000-text-to-3d-box"
    detail = client.get(f"/api/runs/{run_id}").json()
    assert detail["manifest"]["kind"] == "text-to-3d"
    assert [f["path"] for f in detail["files"]] == ["views/view_000.png", "mesh.glb"]
    assert detail["events"]["count"] == 10 and detail["events"]["stages"]["train"]["step"] == 10
    events = client.get(f"/api/runs/{run_id}/events", params={"since": 7}).json()
    assert events["count"] == 10 and [e["step"] for e in events["events"]] == [8, 9, 10]
    glb = client.get(f"/api/runs/{run_id}/files/mesh.glb")
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    assert glb.content == (runs_dir / run_id / "mesh.glb").read_bytes()
    assert client.get(f"/api/runs/{run_id}/files/manifest.json").json()["id"] == run_id
    assert client.get("/api/runs/no-such-run").status_code == 404


def test_4d_run_counts_its_frames_and_serves_them(client: TestClient, runs_dir: Path):
    run_id = "20250104-000000-text-to-4d-moving-box"
    make_moving_box_run(runs_dir, run_id, frames=3)
    runs = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert runs[run_id]["frames"] == 3 and runs["20250101-000000-text-to-3d-box"]["frames"] == 0
    files = client.get(f"/api/runs/{run_id}").json()["files"]
    meshes = [(f["path"], f["frame"], f["time"]) for f in files if f["role"] == "mesh"]
    assert meshes == [("frames/000.glb", 0, 0.0), ("frames/001.glb", 1, 0.5), ("frames/002.glb", 2, 1.0)]
    glb = client.get(f"/api/runs/{run_id}/files/frames/002.glb")
    assert glb.status_code == 200 and glb.content == (runs_dir / run_id / "frames" / "002.glb").read_bytes()


def test_run_stream_replays_events_then_ends(client: TestClient):
    with client.stream("GET", "/api/runs/20250101-000000-text-to-3d-box/stream", params={"since": 8}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    blocks = [b for b in text.split("\n\n") if b.strip()]
    kinds = [next(line[7:] for line in b.splitlines() if line.startswith("event: ")) for b in blocks]
    assert kinds == ["progress", "progress", "status", "end"]
    assert json.loads(blocks[0].splitlines()[-1][6:])["step"] == 9 and blocks[0].startswith("id: 8")


def test_unreadable_manifest_shows_as_invalid(client: TestClient, runs_dir: Path):
    (runs_dir / "broken").mkdir()
    (runs_dir / "broken" / "manifest.json").write_text("{not json")
    rows = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert rows["broken"]["status"] == "invalid" and "manifest.json" in rows["broken"]["error"]
    assert client.get("/api/runs/broken").status_code == 409


# -- what the server refuses to serve --------------------------------------------------------------------

def test_serves_only_listed_files_inside_the_run(client: TestClient, runs_dir: Path, tmp_path: Path):
    run = runs_dir / "20250101-000000-text-to-3d-box"
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    (run / "ckpt").mkdir(exist_ok=True)
    (run / "ckpt" / "train.pt").write_bytes(b"weights")  # present but not listed
    os.symlink(secret, run / "link.txt")  # listed, but a symlink out of the run folder
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["artifacts"] += [{"path": "link.txt", "role": "render"}, {"path": "../../secret.txt", "role": "render"},
                              {"path": "/etc/passwd", "role": "render"}]
    (run / "manifest.json").write_text(json.dumps(manifest))
    base = "/api/runs/20250101-000000-text-to-3d-box/files/"
    for rel in ["ckpt/train.pt", "link.txt", "..%2F..%2Fsecret.txt", "%2Fetc%2Fpasswd", "etc/passwd", "..\\..\\x"]:
        response = client.get(base + rel)
        assert response.status_code == 404, rel
        assert "error" in response.json() and "TOP-SECRET" not in response.text and "weights" not in response.text
    os.symlink(tmp_path, runs_dir / "escape")  # a run folder that is a symlink out of RUNS_DIR
    assert client.get("/api/runs/escape").status_code == 404


def test_raw_traversal_paths_get_4xx(live):
    (live.runs_dir.parent / "secret.txt").write_text("TOP-SECRET-CONTENT")
    raw = ["/api/runs/20250101-000000-text-to-3d-box/files/../../../secret.txt",
           "/api/runs/20250101-000000-text-to-3d-box/files/%2e%2e/%2e%2e/secret.txt",
           "/api/runs/20250101-000000-text-to-3d-box/files//etc/passwd",
           "/api/runs/../secret.txt", "/api/runs/%2e%2e/files/secret.txt", "/../../etc/passwd",
           "/api/runs/20250101-000000-text-to-3d-box/files/views/%00.png"]
    address = urlsplit(live.url)
    for target in raw:
        conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        conn.request("GET", target)
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        conn.close()
        assert 400 <= response.status < 500, (target, response.status)
        assert "TOP-SECRET" not in body and "root:" not in body, target


# -- uploads and validation -------------------------------------------------------------------------------

def submit_image(client: TestClient, data: bytes, name: str = "chair.png", options: dict | None = None):
    return client.post("/api/jobs", data={"kind": "image-to-3d", "options": json.dumps(options or {"seed": 3})},
                       files={"image": (name, data, "image/png")})


def test_image_upload_is_checked_and_stored(client: TestClient, runs_dir: Path):
    response = submit_image(client, png_bytes())
    assert response.status_code == 201, response.text
    job = response.json()
    stored = Path(job["options"]["image"])
    assert stored.read_bytes() == png_bytes() and stored.name == "chair.png"
    assert stored.resolve().is_relative_to(runs_dir.resolve())
    assert job["run_id"].endswith(f"-image-to-3d-chair-j{job['id']}") and job["options"]["seed"] == 3


def test_upload_is_not_kept_when_another_option_is_bad(client: TestClient, runs_dir: Path):
    response = submit_image(client, png_bytes(), options={"seed": -1})
    assert response.status_code == 400 and "options.seed" in response.json()["error"]
    assert not list(runs_dir.glob(".gen3d-server/uploads/*/*"))


@pytest.mark.parametrize("data, status", [
    (b"this is not an image at all", 400),
    (png_bytes()[:40], 400),
    (b"", 400),
    (b"\x89PNG" + b"\0" * (MAX_UPLOAD_BYTES + 1024), 413),
], ids=["text", "truncated-png", "empty", "oversized"])
def test_bad_uploads_are_refused(client: TestClient, runs_dir: Path, data: bytes, status: int):
    response = submit_image(client, data)
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert client.get("/api/jobs").json()["jobs"] == []
    assert not list(runs_dir.glob(".gen3d-server/uploads/*/*"))  # nothing kept


@pytest.mark.parametrize("body, fragment", [
    ({"kind": "nope"}, "unknown job kind"),
    ({"kind": "selftest", "options": {"steps": "many"}}, "options.steps"),
    ({"kind": "selftest", "options": {"steps": 0}}, "options.steps"),
    ({"kind": "selftest", "options": {"colour": "red"}}, "options.colour"),
    ({"kind": "text-to-3d", "options": {}}, "options.prompt: is required"),
    ({"kind": "text-to-3d", "options": {"prompt": "x\ny"}}, "options.prompt"),
    ({"kind": "text-to-3d", "options": {"prompt": "a cube", "prior": "../etc"}}, "options.prior"),
    ({"kind": "text-to-3d", "options": {"prompt": "a cube", "set": ["not an override"]}}, "options.set"),
    ({"kind": "text-to-4d", "options": {"prompt": "a ball", "method": "vsd"}}, "options.method: unknown option"),
    ({"kind": "reconstruct", "options": {"scene": "/definitely/not/here"}}, "options.scene"),
    ({"kind": "reconstruct", "options": {"scene": "."}}, "outside the folders this server may read"),
    ({"kind": "resume", "options": {"run": "../x"}}, "options.run"),
    ({"kind": "resume", "options": {"run": "missing-run"}}, "no run 'missing-run'"),
    ({"kind": "selftest", "options": []}, "options: must be a JSON object"),
    (["not", "an", "object"], "request body"),
])
def test_invalid_submissions_get_400_naming_the_field(client: TestClient, body, fragment: str):
    response = client.post("/api/jobs", json=body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]
    assert client.get("/api/jobs").json()["jobs"] == []


def test_malformed_requests_get_json_4xx(client: TestClient):
    assert client.post("/api/jobs", content=b"{", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/api/jobs", content=b"kind=x", headers={"content-type": "text/plain"}).status_code == 415
    assert client.get("/api/jobs/abc").status_code == 422
    assert client.get("/api/jobs/999").status_code == 404
    assert client.get("/api/nothing/here").status_code == 404
    cross = client.post("/api/jobs", json={"kind": "selftest"}, headers={"origin": "http://evil.example"})
    assert cross.status_code == 403
    for response in (client.get("/api/jobs/abc"), cross):
        assert "error" in response.json() and "Traceback" not in response.text


def test_unavailable_kind_is_refused(runs_dir: Path):
    client = TestClient(create_app(runs_dir, available={"selftest"}), base_url=LOOPBACK)
    kinds = {k["name"]: k["available"] for k in client.get("/api/kinds").json()["kinds"]}
    assert kinds["selftest"] is True and kinds["text-to-3d"] is False
    response = client.post("/api/jobs", json={"kind": "text-to-3d", "options": {"prompt": "a cube"}})
    assert response.status_code == 400 and "not available" in response.json()["error"]


@pytest.mark.shared_data("nerf_synthetic_lego_subset")
def test_reconstruct_job_command_line(runs_dir: Path):
    scene = data_dir(required=False) / "nerf_synthetic_lego_subset"
    policy = AccessPolicy(extra_paths=(scene.parent,))  # `gen3d serve --allow-path DATA`
    client = TestClient(create_app(runs_dir, available=ALL_KINDS, policy=policy), base_url=LOOPBACK)
    job = client.post("/api/jobs", json={"kind": "reconstruct", "options": {"scene": str(scene), "views": 3,
                                                                            "set": ["train.steps=5"]}}).json()
    argv = JOB_KINDS["reconstruct"].argv(job["options"], runs_dir / job["run_id"])
    assert argv == ["reconstruct", "--views", "3", "--seed", "0", "--set", "train.steps=5",
                    "--out", str(runs_dir / job["run_id"]), "--", str(scene.resolve())]
    assert job["run_id"].endswith(f"-reconstruct-nerf-synthetic-lego-subset-j{job['id']}")


def test_text_to_4d_job_command_line(client: TestClient, runs_dir: Path):
    job = client.post("/api/jobs", json={"kind": "text-to-4d", "options": {"prompt": "a bouncing ball", "seed": 2,
                                                                           "set": ["fit.steps=3"]}}).json()
    argv = JOB_KINDS["text-to-4d"].argv(job["options"], runs_dir / job["run_id"])
    assert argv == ["text-to-4d", "--seed", "2", "--set", "fit.steps=3", "--out", str(runs_dir / job["run_id"]),
                    "--", "a bouncing ball"]
    assert job["status"] == "queued" and job["run_id"].endswith(f"-text-to-4d-a-bouncing-ball-j{job['id']}")


def test_cancel_queued_job(client: TestClient):
    job = client.post("/api/jobs", json={"kind": "selftest"}).json()
    assert client.post(f"/api/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"


# -- the queue ---------------------------------------------------------------------------------------------

def test_concurrent_claims_never_share_a_job(tmp_path: Path):
    queue = JobQueue(tmp_path / QUEUE_FILE)
    ids = {queue.submit("selftest", {"i": i}, lambda job_id: f"run-{job_id}").id for i in range(40)}
    claimed: list[int] = []
    lock = threading.Lock()

    def claim_all(worker: int) -> None:
        own = JobQueue(tmp_path / QUEUE_FILE)
        while (job := own.claim(worker)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claim_all, args=(1000 + w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)
    assert {j.status for j in queue.list()} == {"running"}


def test_fifty_concurrent_submissions_none_lost_or_duplicated(live):
    with live.client() as http:
        before = {j["id"] for j in http.get("/api/jobs").json()["jobs"]}

    def submit(i: int) -> dict:
        with live.client() as http:
            response = http.post("/api/jobs", json={"kind": "selftest", "options": {"seed": i, "steps": 1}})
        assert response.status_code == 201, response.text
        return response.json()

    with ThreadPoolExecutor(max_workers=50) as pool:
        jobs = list(pool.map(submit, range(50)))
    with live.client() as http:
        listed = [j for j in http.get("/api/jobs").json()["jobs"] if j["id"] not in before]
    assert len({j["id"] for j in jobs}) == 50 and len({j["run_id"] for j in jobs}) == 50
    assert sorted(j["options"]["seed"] for j in listed) == list(range(50))
    assert sorted(j["id"] for j in listed) == sorted(j["id"] for j in jobs)
    assert {j["status"] for j in listed} == {"queued"}


def test_restart_keeps_queued_jobs_and_interrupts_the_running_one(tmp_path: Path):
    runs_dir = tmp_path / "runs"
    with live_server(runs_dir, workers=1) as first:
        with first.client() as http:
            slow = http.post("/api/jobs", json={"kind": "selftest", "options": {"steps": 400, "step_seconds": 0.1}}).json()
            queued = [http.post("/api/jobs", json={"kind": "selftest", "options": {"seed": s}}).json() for s in (1, 2)]
        events = runs_dir / slow["run_id"] / "events.jsonl"
        wait_for(lambda: events.is_file() and '"step": 1,' in events.read_text(), 300, what="the slow job's progress")
        first.kill()  # a crash: server, worker and job die together

    with live_server(runs_dir, workers=0) as second, second.client() as http:
        jobs = {j["id"]: j for j in http.get("/api/jobs").json()["jobs"]}
        assert jobs[slow["id"]]["status"] == "interrupted"
        assert [jobs[q["id"]]["status"] for q in queued] == ["queued", "queued"]
        run = http.get(f"/api/runs/{slow['run_id']}").json()
        assert run["summary"]["status"] == "interrupted"
        resume = http.post("/api/jobs", json={"kind": "resume", "options": {"run": slow["run_id"]}})
        assert resume.status_code == 201 and resume.json()["run_id"] == slow["run_id"]
        again = http.post("/api/jobs", json={"kind": "resume", "options": {"run": slow["run_id"]}})
        assert again.status_code == 409


# -- the worker --------------------------------------------------------------------------------------------

def worker_with_command(tmp_path: Path, monkeypatch, command: list[str]):
    from gen3d.server.worker import Worker

    worker = Worker(tmp_path, poll_s=0.1)
    monkeypatch.setattr(worker, "command", lambda job: command)
    return worker


def test_worker_records_failure_with_the_output_tail(tmp_path: Path, monkeypatch):
    worker = worker_with_command(tmp_path, monkeypatch, ["sh", "-c", "echo 'error: scene.json missing' >&2; exit 2"])
    worker.queue.submit("selftest", {}, lambda job_id: f"run-{job_id}")
    assert worker.run(worker.queue.claim(os.getpid())) == "failed"
    job = worker.queue.get(1)
    assert (job.status, job.exit_code) == ("failed", 2) and "error: scene.json missing" in job.error


def test_worker_stops_a_cancelled_job(tmp_path: Path, monkeypatch):
    worker = worker_with_command(tmp_path, monkeypatch, ["sleep", "60"])
    worker.queue.submit("selftest", {}, lambda job_id: f"run-{job_id}")
    job = worker.queue.claim(os.getpid())
    threading.Timer(0.5, worker.queue.cancel, args=(job.id,)).start()
    assert worker.run(job) == "cancelled"
    assert worker.queue.get(job.id).status == "cancelled"


def test_stale_running_jobs_are_interrupted(tmp_path: Path):
    queue = JobQueue(tmp_path / QUEUE_FILE)
    for _ in range(2):
        queue.submit("selftest", {}, lambda job_id: f"run-{job_id}")
    alive = queue.claim(os.getpid())  # this process: alive and beating
    dead = queue.claim(2**22 + 12345)  # no such process
    assert [j.id for j in queue.interrupt_stale()] == [dead.id]
    assert queue.get(alive.id).status == "running" and queue.get(dead.id).status == "interrupted"


def test_ray_backend_cancels_and_stops_jobs_like_local_workers(tmp_path: Path):
    pytest.importorskip("ray")
    runs_dir = tmp_path / "runs"
    slow = {"kind": "selftest", "options": {"steps": 400, "step_seconds": 0.1}}
    with live_server(runs_dir, workers=1, args=("--ray",)) as server, server.client() as http:
        cancelled, stopped = (http.post("/api/jobs", json=slow).json() for _ in range(2))
        events = runs_dir / cancelled["run_id"] / "events.jsonl"
        wait_for(lambda: events.is_file() and '"step": 2,' in events.read_text(), 120, what="progress on Ray")
        http.post(f"/api/jobs/{cancelled['id']}/cancel")
        wait_for(lambda: http.get(f"/api/jobs/{cancelled['id']}").json()["status"] == "cancelled", 60, what="cancel")
        events = runs_dir / stopped["run_id"] / "events.jsonl"
        wait_for(lambda: events.is_file() and '"step": 2,' in events.read_text(), 120, what="the next job")
    queue = JobQueue(runs_dir / QUEUE_FILE)
    assert queue.get(stopped["id"]).status == "interrupted"
    assert json.loads((runs_dir / stopped["run_id"] / "manifest.json").read_text())["status"] == "interrupted"
