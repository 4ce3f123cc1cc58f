"""text-to-4d and image-to-4d: the shipped 4D prior moves objects with time, short runs write every
artifact (frame GLBs, playing turntable, renders per time), and bad inputs exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from run_helpers import hashes

from gen3d.cameras import orbit
from gen3d.cli import main
from gen3d.config import load_config
from gen3d.models.prior import load_prior
from gen3d.pipelines import text_to_4d
from gen3d.runs import read_manifest, run_job
from gen3d.shapeworld.scenes import FOV_Y_DEG, RADIUS

ROOT = Path(__file__).resolve().parents[1]
CI_CONFIG = ROOT / "configs" / "ci" / "text-to-4d.yaml"
PROMPT = "a large red sphere bouncing"


@pytest.fixture(scope="module")
def prior():
    return load_prior("shapeworld-4d")


def _centroid(alpha: torch.Tensor) -> np.ndarray:
    """(column, row) of an alpha map's centre of mass, in pixels."""
    h, w = alpha.shape
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    total = alpha.sum()
    return np.array([(alpha * cols).sum() / total, (alpha * rows).sum() / total])


def test_the_4d_prior_moves_the_object_as_the_caption_says(prior):
    # A camera on -y looks along +y: world +x is image right, world +z image up.
    cams = orbit([10.0], [270.0], RADIUS, FOV_Y_DEG, 64, 64)
    times = torch.tensor([0.0, 1.0])
    slide = prior.sample_grid("a large red sphere sliding to the right", cams, times, steps=10,
                              generator=torch.Generator().manual_seed(0))
    shift = _centroid(slide[1, 0, 3]) - _centroid(slide[0, 0, 3])
    assert shift[0] > 8  # the true slide is 0.5 world units: about 17 px at this distance
    bounce = prior.sample_grid("a large red sphere bouncing", cams, torch.tensor([0.0, 0.25]), steps=10,
                               generator=torch.Generator().manual_seed(0))
    lift = _centroid(bounce[1, 0, 3]) - _centroid(bounce[0, 0, 3])
    assert lift[1] < -4  # up is towards row 0; the true lift is 0.3 world units (about 10 px)


def test_grid_sampling_is_reproducible_and_rejects_too_many_cameras(prior):
    cams = orbit([15.0, 15.0], [0.0, 180.0], RADIUS, FOV_Y_DEG, 64, 64)
    a, b = (prior.sample_grid("a blue cone spinning", cams, torch.tensor([0.0, 0.5]), steps=3,
                              generator=torch.Generator().manual_seed(1)) for _ in range(2))
    assert a.shape == (2, 2, 4, 64, 64) and torch.equal(a, b)
    from gen3d.errors import UserError

    with pytest.raises(UserError, match="1 to 6 cameras"):
        prior.sample_grid("a blue cone", orbit([15.0] * 7, [0.0] * 7, RADIUS, FOV_Y_DEG, 64, 64), torch.zeros(1))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "reference"
    assert main(["text-to-4d", PROMPT, "--config", str(CI_CONFIG), "--seed", "2", "--out", str(out)]) == 0
    return out


def test_text_to_4d_run_writes_frames_turntable_and_renders_per_time(reference):
    out = reference
    manifest = read_manifest(out)
    assert manifest["status"] == "done" and manifest["kind"] == "text-to-4d"
    frames = [a for a in manifest["artifacts"] if a["role"] == "mesh"]
    assert [a["frame"] for a in frames] == list(range(len(frames))) and len(frames) >= 2
    assert [a["time"] for a in frames] == sorted(a["time"] for a in frames)
    for a in frames:
        mesh = trimesh.load(out / a["path"], force="mesh")
        assert len(mesh.faces) > 0 and a["up"] == "y"
    assert {a["path"] for a in manifest["artifacts"] if a["role"] == "turntable"} == {"turntable.mp4", "turntable.gif"}
    renders = [a for a in manifest["artifacts"] if a["role"] == "render"]
    assert len(renders) == 2 * 8 and {a["time"] for a in renders} == {0.0, 1.0}
    grid = np.array(Image.open(out / "views.png"))
    assert grid.shape[:2] == (3 * 64, 3 * 64)  # rows = frames, columns = cameras
    assert manifest["metrics"]["frames"] == 3 and manifest["metrics"]["field_mb"] > 0


def test_export_re_exports_one_mesh_per_frame_of_a_4d_run(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    assert main(["export", str(run), "--format", "obj", "--resolution", "20"]) == 0
    folder = run / "export" / "frames-20-obj"
    assert capsys.readouterr().out.strip() == f"wrote {folder}"
    entries = [a for a in read_manifest(run)["artifacts"] if a["path"].startswith("export/")]
    assert [a["frame"] for a in entries] == list(range(len(entries))) and len(entries) >= 2
    assert all(a["path"].startswith("export/frames-20-obj/") and a["up"] == "z" for a in entries)
    assert all(len(trimesh.load(run / a["path"], force="mesh").faces) > 0 for a in entries)


def test_run_interrupted_in_fit_resumes_to_identical_artifacts(reference, tmp_path):
    job = text_to_4d.build_job(load_config(text_to_4d.Config, CI_CONFIG), {"prompt": PROMPT}, 2)

    def interrupt_at_step_25(event: dict) -> None:
        if event["stage"] == "fit" and event.get("step") == 25:
            raise KeyboardInterrupt  # the last checkpoint is step 20's

    run = run_job(job, tmp_path / "cut", echo=lambda _: None, on_event=interrupt_at_step_25)
    assert run.status == "interrupted"
    assert main(["resume", str(run.path)]) == 0
    assert hashes(run.path) == hashes(reference)


def test_sds_distils_a_space_time_field_through_the_4d_prior(tmp_path):
    out = tmp_path / "sds"
    assert main(["text-to-4d", PROMPT, "--method", "sds", "--config", str(CI_CONFIG), "--set", "distill.steps=4",
                 "--set", "distill.render_size=16", "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert [s["name"] for s in manifest["stages"]] == ["distill", "export"] and manifest["status"] == "done"
    assert len([a for a in manifest["artifacts"] if a["role"] == "render"]) == 2 * 8


def test_4d_config_errors_exit_2_naming_the_key(tmp_path, capsys):
    code = main(["text-to-4d", "a red ball bouncing", "--config", str(CI_CONFIG), "--set", "grid.cameras=9",
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "grid.cameras" in capsys.readouterr().err and not (tmp_path / "o").exists()
    code = main(["text-to-4d", "a red ball", "--set", "grid.nope=1", "--out", str(tmp_path / "o")])
    assert code == 2 and "nope" in capsys.readouterr().err


def test_image_to_4d_animates_a_photo_and_refuses_bad_files(tmp_path, capsys):
    photo = ROOT / "scenes" / "shapeworld-snowman" / "train" / "000.png"
    out = tmp_path / "run"
    assert main(["image-to-4d", str(photo), "--prompt", "a snowman spinning", "--config", str(CI_CONFIG),
                 "--set", "grid.frames=2", "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert manifest["status"] == "done" and (out / "input.png").is_file()
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["image-to-4d", str(bad), "--prompt", "a ball bouncing", "--out", str(tmp_path / "b")]) == 2
    assert "bad.png" in capsys.readouterr().err and not (tmp_path / "b").exists()
