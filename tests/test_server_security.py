"""A server safe to expose: the Host allow-list, the token (and how the viewer keeps it), file options
confined to the runs folder, and workers that never outlive their server, whatever signal ends it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from viewer_helpers import child_pids, descendants, live_server, make_run, wait_for

from gen3d.errors import UserError
from gen3d.server.app import create_app
from gen3d.server.guards import AccessPolicy, allowed_hosts, host_name
from gen3d.server.jobkinds import JOB_KINDS
from gen3d.server.jobqueue import pid_alive
from gen3d.server.launcher import ServeConfig, access_policy
from gen3d.server.worker import STOP_GRACE_S
from gen3d.settings import configs_dir

TOKEN = "security-test-token-0123456789"
GONE_WITHIN_S = 10.0  # an idle worker notices within its poll interval; generous for a loaded machine


def app_client(runs: Path, host: str = "127.0.0.1", **policy) -> TestClient:
    return TestClient(create_app(runs, available=set(JOB_KINDS), policy=AccessPolicy(**policy)),
                      base_url=f"http://{host}")


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    make_run(root, "20250101-000000-text-to-3d-box", inputs={"prompt": "a box"})
    return root


# -- Host allow-list -------------------------------------------------------------------------------------

def test_loopback_names_pass_and_other_hosts_are_refused(runs: Path):
    client = app_client(runs)
    for host in ("127.0.0.1:7860", "localhost", "LOCALHOST:80", "[::1]:7860"):
        assert client.get("/api/health", headers={"host": host}).status_code == 200, host
    for host in ("attacker.example", "attacker.example:7860", "127.0.0.1.nip.io", "192.168.1.10:7860"):
        response = client.get("/api/health", headers={"host": host})
        assert response.status_code == 421 and "--allow-host" in response.json()["error"], host
    assert client.get("/", headers={"host": "attacker.example"}).status_code == 421  # the viewer's page too


def test_allowed_hosts_add_the_listen_address_and_the_operators_names(runs: Path):
    assert allowed_hosts("0.0.0.0") == ("localhost", "127.0.0.1", "::1")
    assert allowed_hosts("192.168.1.10", ("Gen3d.lan:7860",)) == ("localhost", "127.0.0.1", "::1", "192.168.1.10",
                                                                  "gen3d.lan")
    assert host_name("[fe80::1]:7860") == "fe80::1" and host_name("example.org:80") == "example.org"
    client = app_client(runs, allowed_hosts=allowed_hosts("0.0.0.0", ("gen3d.lan",)))
    assert client.get("/api/health", headers={"host": "gen3d.lan:7860"}).status_code == 200
    assert client.get("/api/health", headers={"host": "other.lan:7860"}).status_code == 421


# -- the token -------------------------------------------------------------------------------------------

def test_token_is_needed_on_every_api_route(runs: Path):
    client = app_client(runs, token=TOKEN)
    routes = [("GET", "/api/health"), ("GET", "/api/runs"), ("GET", "/api/kinds"), ("GET", "/api/jobs"),
              ("GET", "/api/batches"), ("GET", "/api/runs/20250101-000000-text-to-3d-box/files/manifest.json"),
              ("POST", "/api/jobs"), ("POST", "/api/jobs/1/cancel"), ("GET", "/api/nothing")]
    for method, url in routes:
        response = client.request(method, url, json={"kind": "selftest"})
        assert response.status_code == 401, url
        assert response.json()["error"].startswith("this server needs a token: open the URL `gen3d serve` printed")
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/runs", headers=bearer).status_code == 200
    assert client.post("/api/jobs", json={"kind": "selftest"}, headers=bearer).status_code == 201
    assert client.get("/").status_code == 200  # the viewer's page is public; its API calls are not


def test_token_in_the_url_becomes_a_cookie_the_viewer_sends_by_itself(runs: Path):
    client = app_client(runs, token=TOKEN)
    page = client.get(f"/run.html?id=x&token={TOKEN}")
    assert page.status_code == 200 and "SameSite=Strict" in page.headers["set-cookie"]
    assert "HttpOnly" in page.headers["set-cookie"]
    # later requests carry only the cookie, as the browser's fetch, EventSource and <img> do
    assert client.get("/api/runs").status_code == 200
    assert client.get("/api/runs/20250101-000000-text-to-3d-box/files/views/view_000.png").status_code == 200
    client.cookies.clear()
    assert client.get("/api/runs").status_code == 401


def test_loopback_without_token_needs_nothing(runs: Path):
    client = app_client(runs)
    assert client.get("/api/runs").status_code == 200 and "set-cookie" not in client.get("/").headers
    assert client.post("/api/jobs", json={"kind": "selftest"}).status_code == 201


def test_serve_requires_a_token_off_loopback(tmp_path: Path):
    assert access_policy(ServeConfig(runs_dir=tmp_path)).token is None
    generated = access_policy(ServeConfig(runs_dir=tmp_path, host="0.0.0.0")).token
    assert generated and len(generated) >= 16
    assert generated != access_policy(ServeConfig(runs_dir=tmp_path, host="0.0.0.0")).token
    assert access_policy(ServeConfig(runs_dir=tmp_path, host="192.168.1.10", token=TOKEN)).token == TOKEN
    with pytest.raises(UserError, match="--token"):
        access_policy(ServeConfig(runs_dir=tmp_path, host="0.0.0.0", token="short"))
    with pytest.raises(UserError, match="--allow-path"):
        access_policy(ServeConfig(runs_dir=tmp_path, allow_paths=(tmp_path / "missing",)))


# -- file options ------------------------------------------------------------------------------------------

def test_file_options_are_confined_unless_the_operator_allows_more(runs: Path, tmp_path: Path):
    outside = tmp_path / "scenes" / "lego"
    outside.mkdir(parents=True)
    (outside / "transforms.json").write_text("{}")
    inside = runs / "my-scene"
    inside.mkdir()
    (inside / "transforms.json").write_text("{}")
    (runs / "sneaky").symlink_to(outside)
    client = app_client(runs)
    for scene in (str(outside), str(runs / "sneaky"), f"{runs}/../scenes/lego"):
        response = client.post("/api/jobs", json={"kind": "reconstruct", "options": {"scene": scene}})
        assert response.status_code == 400 and "outside the folders" in response.json()["error"], scene
    assert client.post("/api/jobs", json={"kind": "reconstruct", "options": {"scene": str(inside)}}).status_code == 201
    bundled = configs_dir() / "ci" / "reconstruct.yaml"
    job = client.post("/api/jobs", json={"kind": "reconstruct", "options": {"scene": str(inside),
                                                                            "config": str(bundled)}})
    assert job.status_code == 201, job.text
    allowed = app_client(runs, extra_paths=(tmp_path / "scenes",))
    assert allowed.post("/api/jobs", json={"kind": "reconstruct", "options": {"scene": str(outside)}}).status_code == 201


def test_resume_of_a_finished_run_is_refused_and_of_an_interrupted_one_queued(runs: Path):
    make_run(runs, "20250102-000000-selftest-cut", kind="selftest", status="interrupted")
    client = app_client(runs)
    done = client.post("/api/jobs", json={"kind": "resume", "options": {"run": "20250101-000000-text-to-3d-box"}})
    assert done.status_code == 400 and "already done" in done.json()["error"]
    cut = client.post("/api/jobs", json={"kind": "resume", "options": {"run": "20250102-000000-selftest-cut"}})
    assert cut.status_code == 201


# -- workers never outlive their server ---------------------------------------------------------------------

def _workers_of(server) -> list[int]:
    return wait_for(lambda: [p for p in child_pids(server.proc.pid)
                             if b"gen3d.server.worker" in Path(f"/proc/{p}/cmdline").read_bytes()],
                    60, what="the worker processes")


def test_workers_stop_when_the_server_gets_sigterm(tmp_path: Path):
    """Also with a viewer's progress stream open, which must end rather than hold the shutdown."""
    runs = tmp_path / "runs"
    runs.mkdir()
    make_run(runs, "20250101-000000-selftest-live", kind="selftest", status="running")
    with live_server(runs, workers=2) as server:
        workers = _workers_of(server)
        assert len(workers) == 2 and all(os.getpgid(w) == w for w in workers)  # each leads its own group
        with server.client() as http, http.stream("GET", "/api/runs/20250101-000000-selftest-live/stream") as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("id: 0")  # the stream is open and live
            server.proc.send_signal(signal.SIGTERM)
            rest = list(lines)  # ends when the server stops it
        assert not any("event: end" in line for line in rest)  # stopped by the server, not finished
        server.proc.wait(timeout=30)
        assert server.proc.returncode == 128 + signal.SIGTERM
        assert not [w for w in workers if pid_alive(w)]  # stopped before the server exited
        assert "Traceback" not in "".join(server.stderr)


def test_worker_and_its_job_stop_when_the_server_is_killed(tmp_path: Path):
    """SIGKILL leaves the server no chance to clean up: the kernel's parent-death signal makes the worker
    stop its job at a checkpoint (interrupted, resumable) and exit. The same server listens on all
    interfaces, so it made and printed a token, which the API requires."""
    runs = tmp_path / "runs"
    with live_server(runs, workers=1, args=("--host", "0.0.0.0")) as server:
        assert server.token and server.printed.endswith(f"?token={server.token}")
        with server.client() as http:
            assert http.get("/api/runs", headers={"authorization": ""}).status_code == 401
            job = http.post("/api/jobs", json={"kind": "selftest", "options": {"steps": 400, "step_seconds": 0.1}})
        assert job.status_code == 201, job.text
        events = runs / job.json()["run_id"] / "events.jsonl"
        wait_for(lambda: events.is_file() and '"step": 1,' in events.read_text(), 120, what="the job's progress")
        (worker,) = _workers_of(server)
        family = [worker, *descendants(worker)]
        assert len(family) >= 2  # the worker, its job (and anything the job started)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
        wait_for(lambda: not [p for p in family if pid_alive(p)], STOP_GRACE_S + GONE_WITHIN_S,
                 what="the worker and its job to exit")  # the job may take STOP_GRACE_S to checkpoint
    manifest = json.loads((runs / job.json()["run_id"] / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"


def test_a_worker_whose_server_is_already_gone_exits_at_once(tmp_path: Path):
    """The worker seen idle minutes after its server died had started after the server was gone (a restart
    racing the shutdown) and took its new parent for the server; now the server's pid is passed in."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    started = time.monotonic()
    worker = subprocess.run([sys.executable, "-m", "gen3d.server.worker", str(tmp_path), "--parent", str(dead.pid)],
                            timeout=60, capture_output=True, text=True)
    assert worker.returncode == 0, worker.stderr
    assert time.monotonic() - started < 30


def test_ray_tasks_notice_a_server_killed_outright(tmp_path: Path):
    """SIGKILL leaves the Ray session file behind: a task's worker then goes by the file going untouched."""
    from gen3d.server.raypool import SESSION_FILE, RayWorker

    session = tmp_path / SESSION_FILE
    session.parent.mkdir(parents=True)
    session.write_text("abc")
    worker = RayWorker(tmp_path, "abc", stale_s=0.3)
    assert not worker.orphaned()
    time.sleep(0.4)
    assert worker.orphaned()  # nobody touched it: the server is gone
    os.utime(session, (time.time() + 5, time.time() + 5))  # the dispatcher's touch
    assert not worker.orphaned()
    session.write_text("another server")
    assert worker.orphaned()
