"""`gen3d reconstruct` end to end on a tiny synthetic scene, and an interrupted run resumed exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from gen3d.cameras import orbit
from gen3d.cli import main
from gen3d.config import load_config
from gen3d.data import Scene, Split, write_nerfstudio
from gen3d.pipelines import reconstruct
from gen3d.recon.metrics import psnr
from gen3d.render.mesh import render_mesh
from gen3d.runs import read_manifest, run_job

ROOT = Path(__file__).resolve().parents[1]
CI_CONFIG = ROOT / "configs" / "ci" / "reconstruct.yaml"
SIZE = 32


def _views(mesh: trimesh.Trimesh, elevations, azimuths, prefix: str) -> Split:
    cams = orbit(torch.as_tensor(elevations, dtype=torch.float32), torch.as_tensor(azimuths, dtype=torch.float32),
                 2.5, 40.0, SIZE, SIZE)
    render = render_mesh(mesh, cams)
    return Split(render.composited(), cams, [f"{prefix}_{i:02d}.png" for i in range(len(cams))], render.rgba[..., 3:])


@pytest.fixture(scope="module", autouse=True)
def keep_thread_count():
    """The trainer sets torch's process-wide thread count (1 in the CI preset); give it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    """A sphere coloured by position, 12 training views around it and 3 test views between them."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    rgb = np.round((mesh.vertices / 1.2 + 0.5) * 255)
    mesh.visual.vertex_colors = np.concatenate([rgb, np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
    train = _views(mesh, np.linspace(10, 50, 12), np.arange(12) * 30.0, "train")
    test = _views(mesh, [20.0] * 3, [15.0, 135.0, 255.0], "test")
    scene = Scene(train=train, test=test, near=1.0, far=4.0, aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]),
                  scene_type="bounded", background=(1.0, 1.0, 1.0), source=Path("."), format="nerfstudio")
    return write_nerfstudio(scene, tmp_path_factory.mktemp("scene") / "sphere")


@pytest.fixture(scope="module")
def reference_run(scene_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "reference"
    assert main(["reconstruct", str(scene_dir), "--config", str(CI_CONFIG), "--seed", "7", "--out", str(out)]) == 0
    return out


def hashes(run_dir: Path) -> dict[str, str]:
    return {a["path"]: a["sha256"] for a in read_manifest(run_dir)["artifacts"]}


def test_reconstruct_writes_a_complete_run(reference_run, scene_dir):
    manifest = read_manifest(reference_run)
    assert manifest["status"] == "done" and manifest["seed"] == 7
    assert manifest["inputs"] == {"scene": str(scene_dir.resolve())}
    assert [s["status"] for s in manifest["stages"]] == ["done"] * 4
    assert manifest["config"]["recon"]["steps"] == load_config(reconstruct.Config, CI_CONFIG).recon.steps

    roles = {}
    for artifact in manifest["artifacts"]:
        roles.setdefault(artifact["role"], []).append(artifact["path"])
        assert (reference_run / artifact["path"]).stat().st_size == artifact["bytes"]
    assert roles["views"] == ["views.json"] and roles["checkpoint"] == ["ckpt/train.pt"]
    assert roles["curve"] == ["curve.json"]
    assert roles["render"] == ["renders/000.png", "renders/001.png"]  # evaluate.max_views: 2
    assert sorted(roles["mesh"]) == ["mesh.glb", "mesh.obj", "mesh.ply"]
    assert roles["pointcloud"] == ["pointcloud.ply"] and sorted(roles["turntable"]) == ["turntable.gif", "turntable.mp4"]

    views = json.loads((reference_run / "views.json").read_text())
    assert len(views["train"]) == 12 and views["holdout"] == ["test_00.png", "test_01.png", "test_02.png"]
    assert views["holdout_source"] == "test split"

    # Held-out renders are real images of the sphere: much closer to the truth than a blank white image.
    truth = torch.from_numpy(np.stack([np.array(Image.open(scene_dir / f"test_0{i}.png").convert("RGBA")) for i in (0, 1)]))
    alpha = truth[..., 3:] / 255.0
    truth_rgb = truth[..., :3] / 255.0 * alpha + (1 - alpha)
    renders = torch.from_numpy(np.stack([np.array(Image.open(reference_run / p)) for p in roles["render"]])) / 255.0
    assert renders.shape == (2, SIZE, SIZE, 3)
    blank = psnr(torch.ones_like(truth_rgb), truth_rgb).mean().item()
    assert manifest["metrics"]["psnr"] == pytest.approx(psnr(renders, truth_rgb).mean().item(), abs=0.3)
    assert manifest["metrics"]["psnr"] > blank + 4.0

    curve = json.loads((reference_run / "curve.json").read_text())
    assert [p["step"] for p in curve] == list(range(5, 31, 5))
    assert [p["step"] for p in curve if "psnr" in p] == [10, 20, 30]
    assert curve[-1]["loss"] < curve[0]["loss"]

    mesh = trimesh.load(reference_run / "mesh.ply", force="mesh")
    cell = 2.0 / (32 - 1)  # export.resolution 32 over the box [-1, 1]^3; surfaces close within a cell of it
    assert len(mesh.faces) > 0 and np.abs(mesh.vertices).max() <= 1.0 + cell


def test_scene_alpha_carves_the_occupancy_grid_to_the_visual_hull(reference_run):
    """The scene's PNGs have alpha: the engine gets it, so the grid outside the sphere's hull is empty."""
    state = torch.load(reference_run / "ckpt" / "train.pt", weights_only=True)["state"]["model"]
    hull = state["renderer.occupancy.hull"]
    centres = (torch.stack(torch.meshgrid(*[torch.arange(32)] * 3, indexing="ij"), -1) + 0.5) / 32 * 2 - 1
    radius = centres.norm(dim=-1)
    assert hull[radius < 0.6].all()  # the sphere is kept
    shell = (radius > 0.9) & (radius < 1.1)  # seen as background by most views (corners may be out of frame)
    assert hull[shell].float().mean() < 0.25 and hull.float().mean() < 0.5  # without alpha: 1.0 and 1.0


def test_interrupted_reconstruction_resumes_to_identical_artifacts(reference_run, scene_dir, tmp_path):
    cfg = load_config(reconstruct.Config, CI_CONFIG)
    job = reconstruct.build_job(cfg, {"scene": str(scene_dir.resolve())}, 7)

    def interrupt_at_step_25(event: dict) -> None:
        if event["stage"] == "train" and event.get("step") == 25:
            raise KeyboardInterrupt  # mid-stage: the last checkpoint is step 20's

    run = run_job(job, tmp_path / "cut", echo=lambda _: None, on_event=interrupt_at_step_25)
    assert run.status == "interrupted"
    assert torch.load(run.path / "ckpt" / "train.pt", weights_only=True)["step"] == 20

    assert main(["resume", str(run.path)]) == 0
    assert read_manifest(run.path)["status"] == "done"
    assert hashes(run.path) == hashes(reference_run)
    assert "resumed from checkpoint at step 20/30" in (run.path / "log.txt").read_text()


def test_export_command_adds_a_mesh_at_another_resolution(reference_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(reference_run, run_dir)
    assert main(["export", str(run_dir), "--format", "obj", "--resolution", "24"]) == 0
    entry = [a for a in read_manifest(run_dir)["artifacts"] if a["path"] == "export/mesh-24.obj"]
    assert len(entry) == 1 and entry[0]["role"] == "mesh" and entry[0]["up"] == "z" and entry[0]["resolution"] == 24
    coarse = trimesh.load(run_dir / "export" / "mesh-24.obj", force="mesh")
    fine = trimesh.load(run_dir / "mesh.obj", force="mesh")
    assert 0 < len(coarse.faces) < len(fine.faces)
