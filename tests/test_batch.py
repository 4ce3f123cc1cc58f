"""`gen3d batch`: specs checked before anything starts, 4-job batches on the local and Ray backends with
identical results, and a batch killed mid-run that finishes, when re-run, as if never interrupted.

The batches run `selftest` jobs (seconds of fake training through the real job runner, with
checkpoints and rendered artifacts), since the backends treat every job kind alike.
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
from test_cli import run_cli
from viewer_helpers import wait_for

from gen3d.batch.folder import BATCH_FILE, read_batch
from gen3d.batch.specs import read_specs
from gen3d.runs import read_manifest
from gen3d.server.worker import CLI

ROOT = Path(__file__).resolve().parents[1]
CI_TEXT = ROOT / "configs" / "ci" / "text-to-3d.yaml"
SELFTEST_BATCH = """\
defaults: {kind: selftest, steps: 16, step_seconds: 0.1, set: {view_size: 32}}
sweep:
  seed: [0, 1, 2, 3]
"""


def results(batch_dir: Path) -> dict:
    """Per job: status, artifact hashes and metrics (what "the same batch" compares)."""
    out = {}
    for job in read_batch(batch_dir)["jobs"]:
        manifest = read_manifest(batch_dir / job["run"])
        out[job["id"]] = (job["status"], {a["path"]: a["sha256"] for a in manifest["artifacts"]}, manifest["metrics"])
    return out


@pytest.fixture(scope="module")
def jobs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("specs") / "selftests.yaml"
    path.write_text(SELFTEST_BATCH)
    return path


@pytest.fixture(scope="module")
def local_batch(jobs_file: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "batch"
    proc = subprocess.run([*CLI, "batch", str(jobs_file), "--out", str(out), "--jobs", "2", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["counts"]["done"] == 4
    return out


# -- specs ----------------------------------------------------------------------------------------------

def test_prompt_list_jsonl_and_sweep(tmp_path: Path):
    (tmp_path / "p.txt").write_text("a red sphere\n# a comment\n\na blue cube\n")
    assert [s.values["prompt"] for s in read_specs(tmp_path / "p.txt")] == ["a red sphere", "a blue cube"]
    (tmp_path / "j.jsonl").write_text('{"prompt": "a cone", "seed": 3}\n{"kind": "selftest", "steps": 2}\n')
    specs = read_specs(tmp_path / "j.jsonl")
    assert [(s.kind, s.seed, s.line) for s in specs] == [("text-to-3d", 3, 1), ("selftest", 0, 2)]
    (tmp_path / "s.yaml").write_text(f"defaults: {{config: {CI_TEXT}}}\nsweep:\n  prompt: [a cube, a torus]\n"
                                     "  seed: [0, 1]\n  set: {views.guidance: [2.0, 4.0]}\n")
    specs = read_specs(tmp_path / "s.yaml")
    assert len(specs) == 8 and {s.line for s in specs} == {3}
    assert specs[1].overrides == ("views.guidance=4.0",) and specs[1].config == str(CI_TEXT)
    (tmp_path / "d.yaml").write_text("defaults: {kind: selftest, steps: 3}\njobs:\n  - {seed: 1}\n  - {steps: 5}\n")
    assert [s.values["steps"] for s in read_specs(tmp_path / "d.yaml")] == [3, 5]


@pytest.mark.parametrize(("text", "suffix", "message"), [
    ('{"prompt": "a"}\n{"prompt": "b", "stepz": 3}\n', ".jsonl", ":2: unknown key 'stepz'"),
    ('{"prompt": "a"}\n\n{"prompt": "b", "set": ["recon.nope=1"]}\n', ".jsonl", ":3: unknown config key 'recon.nope'"),
    ("jobs:\n  - {prompt: a}\n  - {prompt: b, seed: x}\n", ".yaml", ":3: 'seed' must be an integer"),
    ("jobs:\n  - {prompt: a}\n  - {kind: reconstruct, scene: /nowhere}\n", ".yaml", ":3: "),
    ('{"prompt": "a"}\n{"prompt": ""}\n', ".jsonl", ":2: the prompt is empty"),
    ('{"kind": "train"}\n', ".jsonl", ":1: unknown job kind 'train'"),
])
def test_bad_spec_line_refused_before_anything_starts(tmp_path, capsys, text, suffix, message):
    jobs = tmp_path / f"jobs{suffix}"
    jobs.write_text(text)
    code, out, err = run_cli(capsys, "batch", jobs, "--out", tmp_path / "batch")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "batch").exists()


def test_ray_backend_without_ray_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    (tmp_path / "p.txt").write_text("a red sphere\n")
    code, out, err = run_cli(capsys, "batch", tmp_path / "p.txt", "--backend", "ray", "--out", tmp_path / "b")
    assert code == 2 and "pip install 'gen3d[cluster]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


# -- backends -------------------------------------------------------------------------------------------

def test_local_batch_writes_a_run_folder_per_job(local_batch: Path):
    batch = read_batch(local_batch)
    assert [j["status"] for j in batch["jobs"]] == ["done"] * 4 and batch["counts"]["done"] == 4
    assert [j["spec"]["seed"] for j in batch["jobs"]] == [0, 1, 2, 3]
    assert all(j["seconds"] > 0 and "psnr" in j["metrics"] for j in batch["jobs"])
    assert len({json.dumps(m, sort_keys=True) for _, _, m in results(local_batch).values()}) == 4  # seeds differ


def test_the_server_lists_the_batch_with_its_progress(local_batch: Path):
    from fastapi.testclient import TestClient

    from gen3d.server.app import create_app

    (batch,) = TestClient(create_app(local_batch.parent), base_url="http://127.0.0.1").get("/api/batches").json()["batches"]
    assert (batch["id"], batch["total"], batch["counts"]["done"], batch["progress"]) == ("batch", 4, 4, 1.0)
    assert [j["status"] for j in batch["jobs"]] == ["done"] * 4


def test_rerun_of_a_finished_batch_skips_every_job(local_batch: Path, jobs_file: Path):
    before = {p: p.stat().st_mtime_ns for p in local_batch.glob("*/manifest.json")}
    proc = subprocess.run([*CLI, "batch", str(jobs_file), "--out", str(local_batch)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in local_batch.glob("*/manifest.json")} == before


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc's children lists)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            children = [int(c) for c in task.read_text().split()]
            found += children
            todo += children
    return found


def running_ray_task(pid: int) -> int | None:
    """A Ray worker below `pid` that is running a batch job (Ray titles it after the task)."""
    for child in descendants(pid):
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"ray::run_task"):
                return child
        except OSError:
            continue
    return None


def test_ray_batch_equals_local_batch_though_a_worker_is_killed(local_batch: Path, jobs_file: Path, tmp_path: Path):
    """The 4-job batch on Ray (a local instance); SIGKILL of a worker mid-job: Ray runs the job again,
    it resumes from its checkpoint, and every job ends as on the local backend."""
    pytest.importorskip("ray")
    out = tmp_path / "ray-killed"
    proc = subprocess.Popen([*CLI, "batch", str(jobs_file), "--out", str(out), "--backend", "ray", "--jobs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(out.glob("*/ckpt/*.pt")), timeout=120, interval=0.05, what="a first checkpoint")
    os.kill(wait_for(lambda: running_ray_task(proc.pid), timeout=30, what="a Ray worker"), signal.SIGKILL)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    assert results(out) == results(local_batch)


def test_killed_batch_rerun_equals_uninterrupted(local_batch: Path, jobs_file: Path, tmp_path: Path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, "batch", str(jobs_file), "--out", str(out), "--jobs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # SIGKILL driver and workers at once while a job is between checkpoints
        wait_for(lambda: any(out.glob("*/ckpt/*.pt")), timeout=120, interval=0.05, what="a first checkpoint")
        time.sleep(0.15)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert any(j["status"] != "done" for j in read_batch(out)["jobs"])
    rerun = subprocess.run([*CLI, "batch", str(jobs_file), "--out", str(out), "--jobs", "2"], capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert results(out) == results(local_batch)
    assert (out / BATCH_FILE).is_file()
