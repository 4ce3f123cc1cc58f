"""The job runner with stand-in stages: manifest, events, failures, interrupts and exact resume."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from gen3d.errors import UserError
from gen3d.io import atomic_output, atomic_write_json
from gen3d.pipelines import job_from_manifest
from gen3d.pipelines.kinds import KINDS, JobKind
from gen3d.runs import Job, RunFolder, Stage, read_events, read_manifest, resume_job, run_job
from gen3d.runs.folder import new_run_dir
from gen3d.runs.job import derive_seed
from gen3d.runs.progress import ProgressBar

MANIFEST_KEYS = {"schema_version", "id", "kind", "status", "inputs", "seed", "config", "gen3d_version", "git_rev",
                 "torch_version", "num_threads", "device", "stages", "artifacts", "metrics"}


@dataclass
class Config:
    steps: int = 12
    every: int = 4
    size: int = 16


def _make_views(ctx) -> None:
    """Random 'views' from the stage generator and the (seeded) global numpy RNG, saved to disk."""
    views = torch.rand(3, ctx.config.size, generator=ctx.generator).numpy() + np.random.rand(3, 1)
    path = ctx.path / "views.npy"
    with atomic_output(path) as tmp:
        np.save(tmp, views)
    ctx.add_artifact(path, "views")
    ctx.shared["views"] = views


def _fit(ctx, interrupt_at: int | None = None, signal_at: int | None = None) -> None:
    """A noisy fit drawing from every RNG each step, so an inexact resume changes the result."""
    views = ctx.shared.get("views")
    if views is None:  # resumed run: reload the earlier stage's output
        views = np.load(ctx.path / "views.npy")
    w = torch.zeros(ctx.config.size, dtype=torch.float64)
    total = ctx.config.steps

    def state() -> dict:
        return {"w": w.clone()}

    def restore(saved: dict) -> None:
        w.copy_(saved["w"])

    for step in ctx.steps(total, every=ctx.config.every, state=state, restore=restore):
        target = torch.from_numpy(views[step % 3])
        noise = torch.randn(ctx.config.size, generator=ctx.generator, dtype=torch.float64)
        w += 0.3 * (target - w) + 0.01 * noise + 1e-3 * (torch.rand(1).item() + ctx.np_rng.normal() + random.random())
        ctx.event(step + 1, total, loss=float(((w - target) ** 2).mean()))
        if step + 1 == interrupt_at:
            raise KeyboardInterrupt
        if step + 1 == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
    path = ctx.path / "weights.npy"
    with atomic_output(path) as tmp:
        np.save(tmp, w.numpy())
    ctx.add_artifact(path, "render")
    ctx.add_artifact(ctx.save_checkpoint({"w": w}, total), "checkpoint")
    ctx.set_metrics(final_loss=float(w.abs().mean()))


def build_job(config: Config, inputs: dict, seed: int, interrupt_at=None, signal_at=None, fail_with=None) -> Job:
    def fit(ctx):
        if fail_with is not None:
            raise fail_with
        _fit(ctx, interrupt_at, signal_at)

    return Job(kind="toy", config=config, inputs=inputs, seed=seed, slug=inputs["name"], stages=[
        Stage("views", _make_views, lambda job: 0.5),
        Stage("fit", fit, lambda job: 0.01 * job.config.steps),
    ])


def quiet(_: str) -> None:
    pass


def toy(seed=3, **kw) -> Job:
    return build_job(Config(), {"name": "toy scene"}, seed, **kw)


def artifact_hashes(run_dir: Path) -> dict[str, str]:
    return {a["path"]: a["sha256"] for a in read_manifest(run_dir)["artifacts"]}


def test_manifest_schema_events_and_log(tmp_path):
    run = run_job(toy(), root=tmp_path, echo=quiet)
    assert run.path.parent == tmp_path and run.path.name.endswith("-toy-toy-scene")
    manifest = read_manifest(run.path)
    assert MANIFEST_KEYS <= set(manifest)
    assert manifest["status"] == "done" and manifest["seed"] == 3 and manifest["kind"] == "toy"
    assert manifest["config"] == {"steps": 12, "every": 4, "size": 16}
    assert manifest["num_threads"] == torch.get_num_threads()
    assert [(s["name"], s["status"], s["estimated_seconds"]) for s in manifest["stages"]] == [
        ("views", "done", 0.5), ("fit", "done", 0.12)]
    assert all(s["seconds"] >= 0 and s["started"] for s in manifest["stages"])
    by_path = {a["path"]: a for a in manifest["artifacts"]}
    assert set(by_path) == {"views.npy", "weights.npy", "ckpt/fit.pt"}
    assert by_path["ckpt/fit.pt"]["role"] == "checkpoint" and by_path["ckpt/fit.pt"]["stage"] == "fit"
    assert by_path["views.npy"]["bytes"] == (run.path / "views.npy").stat().st_size
    assert "final_loss" in manifest["metrics"]
    # No temporary files survive the atomic writes.
    assert not [p for p in run.path.rglob("*") if ".tmp" in p.name]

    events = read_events(run.path)
    steps = [e for e in events if e["stage"] == "fit" and e.get("loss") is not None]
    assert [e["step"] for e in steps] == list(range(1, 13)) and all(e["total"] == 12 for e in steps)
    assert all("eta_s" in e for e in steps[1:])
    assert all(isinstance(e["time"], float) for e in events)
    log = (run.path / "log.txt").read_text()
    assert "[views] started" in log and "[fit] done" in log


def test_same_seed_same_artifacts_other_seed_differs(tmp_path):
    a = run_job(toy(seed=3), tmp_path / "a", echo=quiet)
    b = run_job(toy(seed=3), tmp_path / "b", echo=quiet)
    c = run_job(toy(seed=4), tmp_path / "c", echo=quiet)
    assert artifact_hashes(a.path) == artifact_hashes(b.path)
    assert artifact_hashes(a.path)["weights.npy"] != artifact_hashes(c.path)["weights.npy"]
    assert derive_seed(3, "fit") == derive_seed(3, "fit") != derive_seed(3, "views")


@pytest.mark.parametrize("interrupt", [{"interrupt_at": 10}, {"signal_at": 6}])
def test_interrupted_then_resumed_matches_uninterrupted(tmp_path, interrupt):
    reference = run_job(toy(), tmp_path / "ref", echo=quiet)
    run = run_job(toy(**interrupt), tmp_path / "cut", echo=quiet)

    manifest = read_manifest(run.path)
    assert manifest["status"] == "interrupted"
    assert [s["status"] for s in manifest["stages"]] == ["done", "interrupted"]
    ckpt = torch.load(run.path / "ckpt" / "fit.pt", weights_only=True)
    # KeyboardInterrupt mid-step keeps the last periodic checkpoint (step 8); a signal stops
    # gracefully at the next step boundary and checkpoints there (step 6).
    assert ckpt["step"] == (8 if "interrupt_at" in interrupt else 6)
    assert not (run.path / "weights.npy").exists()

    resumed = resume_job(RunFolder.open(run.path), toy(), echo=quiet)
    assert resumed.status == "done"
    assert artifact_hashes(resumed.path) == artifact_hashes(reference.path)
    assert np.array_equal(np.load(resumed.path / "weights.npy"), np.load(reference.path / "weights.npy"))
    assert "resumed from checkpoint at step" in (run.path / "log.txt").read_text()


def test_resume_rebuilds_job_from_manifest_registry(tmp_path, monkeypatch):
    monkeypatch.setitem(KINDS, "toy", JobKind("toy", "", "", "", module=__name__, command=False, form=False))
    run = run_job(toy(interrupt_at=5), tmp_path / "cut", echo=quiet)
    job = job_from_manifest(read_manifest(run.path))
    assert job.config == Config() and job.seed == 3 and job.inputs == {"name": "toy scene"}
    reference = run_job(toy(), tmp_path / "ref", echo=quiet)
    assert artifact_hashes(resume_job(RunFolder.open(run.path), job, echo=quiet).path) == artifact_hashes(reference.path)
    with pytest.raises(UserError, match="already done"):
        resume_job(RunFolder.open(run.path), job, echo=quiet)


def test_internal_failure_marks_failed_with_traceback(tmp_path):
    with pytest.raises(ZeroDivisionError):
        run_job(toy(fail_with=ZeroDivisionError("boom")), tmp_path / "r", echo=quiet)
    manifest = read_manifest(tmp_path / "r")
    assert manifest["status"] == "failed" and manifest["error"] == "ZeroDivisionError: boom"
    assert [s["status"] for s in manifest["stages"]] == ["done", "failed"]
    assert "Traceback" in (tmp_path / "r" / "log.txt").read_text()


def test_bad_input_before_any_stage_leaves_no_folder(tmp_path):
    job = toy()
    job.stages[0] = Stage("views", lambda ctx: (_ for _ in ()).throw(UserError("scene.json: bad")), lambda j: 0)
    with pytest.raises(UserError, match="scene.json"):
        run_job(job, root=tmp_path, echo=quiet)
    assert list(tmp_path.iterdir()) == []


def test_out_folder_that_is_a_run_is_refused(tmp_path):
    run_job(toy(), tmp_path / "r", echo=quiet)
    with pytest.raises(UserError, match="already a run folder"):
        run_job(toy(), tmp_path / "r", echo=quiet)


def test_atomic_output_leaves_nothing_on_error_and_keeps_old_file(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_run_dir_names_and_root_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN3D_RUNS", str(tmp_path / "env-root"))
    monkeypatch.setattr("gen3d.runs.folder.time.strftime", lambda fmt: "20250102-030405")
    first = new_run_dir("reconstruct", "Fern (LLFF)!")
    second = new_run_dir("reconstruct", "Fern (LLFF)!")
    assert first == tmp_path / "env-root" / "20250102-030405-reconstruct-fern-llff"
    assert second.name == first.name + "-2" and second.is_dir()


def test_read_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="manifest.json: not valid JSON"):
        read_manifest(tmp_path)


def test_stop_event_from_another_thread_stops_gracefully(tmp_path):
    """The viewer's worker runs jobs off the main thread and stops them through the `stop` event."""
    stop = threading.Event()

    def request_stop(event: dict) -> None:
        if event.get("step") == 6:
            stop.set()

    result = {}
    worker = threading.Thread(target=lambda: result.update(
        run=run_job(toy(), tmp_path / "cut", echo=quiet, stop=stop, on_event=request_stop)))
    worker.start()
    worker.join()
    assert result["run"].status == "interrupted"
    assert torch.load(tmp_path / "cut" / "ckpt" / "fit.pt", weights_only=True)["step"] == 6
    reference = run_job(toy(), tmp_path / "ref", echo=quiet)
    resumed = resume_job(RunFolder.open(tmp_path / "cut"), toy(), echo=quiet)
    assert artifact_hashes(resumed.path) == artifact_hashes(reference.path)


def test_progress_bar_follows_events():
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=True)
    for step in (5, 10):
        bar({"stage": "train", "step": step, "total": 10, "loss": 0.25, "psnr": 21.5})
    bar({"stage": "train", "step": None, "total": None, "message": "done"})
    text = stream.getvalue()
    assert "train" in text and "10/10" in text and "loss=0.25" in text and "psnr=21.5" in text
    silent = io.StringIO()
    ProgressBar(stream=silent)({"stage": "train", "step": 1, "total": 2})  # not a terminal: no bar
    assert silent.getvalue() == ""


def test_truncated_checkpoint_is_a_user_error_naming_it(tmp_path):
    run = run_job(toy(interrupt_at=10), tmp_path / "cut", echo=quiet)
    ckpt = run.path / "ckpt" / "fit.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    with pytest.raises(UserError, match=f"{ckpt}: unreadable checkpoint"):
        resume_job(RunFolder.open(run.path), toy(), echo=quiet)
    assert read_manifest(run.path)["status"] == "interrupted"  # refused before the run was touched
