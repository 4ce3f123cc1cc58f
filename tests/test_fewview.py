"""Few-view reconstruction with the prior (`reconstruct --prior`): camera mapping to the prior's
frame, conditioning on the nearest observed views, image conversions, the ReconFusion regulariser,
and short CI runs in both modes (cat3d, reconfusion) with `gen3d export` afterwards."""

import json
from pathlib import Path

import pytest
import torch

from gen3d.cameras import orbit
from gen3d.cli import main
from gen3d.data import load_scene
from gen3d.models.prior import Observed
from gen3d.pipelines.fewview import (
    PRIOR_RADIUS,
    ScoreRegularizer,
    ScoreRegularizerConfig,
    nearest_views,
    novel_cameras,
    scene_radius,
    straight_rgba,
    to_prior_frame,
    to_scene_images,
)
from gen3d.pipelines.stages.resources import cached_prior
from gen3d.recon import ReconConfig, ReconTrainer
from gen3d.runs import read_manifest

ROOT = Path(__file__).resolve().parents[1]
CI_CONFIG = ROOT / "configs" / "ci" / "fewview.yaml"
PRIOR_WEIGHTS = ROOT / "gen3d" / "assets" / "priors" / "shapeworld-mv" / "multiview" / "model.safetensors"


def test_scene_cameras_move_to_the_prior_radius_keeping_direction_and_orientation():
    cams = orbit([10.0, 30.0], [0.0, 120.0], 4.0, 40.0, 100, 80)
    mapped = to_prior_frame(cams, scene_radius(cams), 64)
    eyes = mapped.c2w[:, :3, 3]
    assert torch.allclose(eyes.norm(dim=-1), torch.full((2,), PRIOR_RADIUS), atol=1e-5)
    assert torch.allclose(eyes / PRIOR_RADIUS, cams.c2w[:, :3, 3] / 4.0, atol=1e-6)
    assert torch.equal(mapped.c2w[:, :3, :3], cams.c2w[:, :3, :3])
    assert (mapped.width, mapped.height) == (64, 64) and torch.allclose(mapped.fy, cams.fy * 64 / 80)


def test_novel_cameras_orbit_between_observed_ones_at_their_radius_and_fov():
    observed = orbit([20.0, 20.0], [30.0, 200.0], 3.0, 40.0, 64, 64)
    novel = novel_cameras(observed, 4, [15.0, 30.0])
    eyes = novel.c2w[:, :3, 3]
    assert torch.allclose(eyes.norm(dim=-1), torch.full((4,), 3.0), atol=1e-5)
    azimuths = torch.rad2deg(torch.atan2(eyes[:, 1], eyes[:, 0])) % 360
    assert torch.allclose(azimuths, torch.tensor([75.0, 165.0, 255.0, 345.0]), atol=1e-3)
    elevations = torch.rad2deg(torch.asin(eyes[:, 2] / 3.0))
    assert torch.allclose(elevations, torch.tensor([15.0, 30.0, 15.0, 30.0]), atol=1e-3)
    assert torch.allclose(novel.fy, observed.fy[:1].expand(4), atol=1e-4)


def test_each_set_is_conditioned_on_its_nearest_observed_views():
    observed = orbit([15.0] * 4, [0.0, 90.0, 180.0, 270.0], 2.5, 40.0, 64, 64)
    targets = orbit([15.0, 15.0], [80.0, 110.0], 2.5, 40.0, 64, 64)
    assert nearest_views(observed, targets, 1) == [1]
    assert nearest_views(observed, targets, 3)[0] == 1 and 3 not in nearest_views(observed, targets, 3)


def test_generated_views_reach_the_scene_size_over_its_background():
    rgba = torch.zeros(1, 4, 4, 4)
    rgba[0, 1:3, 1:3] = torch.tensor([1.0, 0.0, 0.0, 1.0])  # an opaque red square on transparency
    images, alpha = to_scene_images(rgba, 8, 8, (0.0, 0.0, 1.0))
    assert images.shape == (1, 8, 8, 3) and alpha.shape == (1, 8, 8, 1)
    assert torch.allclose(images[0, 0, 0], torch.tensor([0.0, 0.0, 1.0]))  # background where alpha = 0
    assert torch.allclose(images[0, 4, 4], torch.tensor([1.0, 0.0, 0.0])) and alpha[0, 4, 4, 0] == 1


@pytest.fixture(scope="module")
def shapeworld_scene(tmp_path_factory):
    from gen3d.bench.fewview import shapeworld_scene

    return shapeworld_scene(0, 32, tmp_path_factory.mktemp("sw") / "scene")


def test_prior_flag_picks_the_pipeline(shapeworld_scene, capsys):
    args = ["reconstruct", str(shapeworld_scene), "--views", "3", "--config", str(CI_CONFIG), "--dry-run"]
    assert main(args + ["--prior", "shapeworld-mv"]) == 0
    with_prior = capsys.readouterr().out
    assert "shapeworld-mv" in with_prior and "views" in with_prior
    # without --prior it is the plain engine, whose config has no prior section to accept
    assert main(args) == 2
    assert "prior" in capsys.readouterr().err


@pytest.mark.skipif(not PRIOR_WEIGHTS.is_file(), reason="shapeworld-mv weights not shipped in this checkout")
def test_short_fewview_run_with_the_prior(shapeworld_scene, tmp_path):
    out = tmp_path / "run"
    assert main(["reconstruct", str(shapeworld_scene), "--views", "3", "--prior", "shapeworld-mv",
                 "--config", str(CI_CONFIG), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "reconstruct-prior" and manifest["status"] == "done"
    assert [s["name"] for s in manifest["stages"]] == ["load", "views", "train", "evaluate", "export"]
    generated = json.loads((out / "generated.json").read_text())
    assert len(generated["views"]) == 4 and all((out / name).is_file() for name in generated["views"])
    radii = torch.tensor(generated["c2w"])[:, :3, 3].norm(dim=-1)
    assert torch.allclose(radii, torch.full((4,), 2.5), atol=1e-4)  # the scene's own camera radius
    metrics = manifest["metrics"]
    assert 5 < metrics["psnr"] < 60 and 0 <= metrics["mask_iou"] <= 1 and metrics["eval_views"] == 2
    assert len(json.loads((out / "views.json").read_text())["train"]) == 3

    # the run's config has a prior section, which `gen3d export` reads with this pipeline's config
    assert main(["export", str(out), "--format", "ply", "--resolution", "32"]) == 0
    entry = [a for a in read_manifest(out)["artifacts"] if a["path"] == "export/mesh-32.ply"]
    assert len(entry) == 1 and entry[0]["role"] == "mesh" and entry[0]["resolution"] == 32
    assert (out / "export" / "mesh-32.ply").read_bytes() == (out / "mesh.ply").read_bytes()  # same field, same grid


class RecordingPrior:
    """The prior, remembering the observed cameras and targets of every `condition` call."""

    def __init__(self, prior):
        self.prior, self.calls = prior, []

    def __getattr__(self, name):
        return getattr(self.prior, name)

    def condition(self, prompt, cameras, observed=None):
        self.calls.append((cameras, observed.cameras))
        return self.prior.condition(prompt, cameras, observed)


@pytest.mark.skipif(not PRIOR_WEIGHTS.is_file(), reason="shapeworld-mv weights not shipped in this checkout")
def test_regulariser_conditions_on_the_nearest_views_and_steps_reproducibly(shapeworld_scene):
    train = load_scene(shapeworld_scene).train  # 6 observed views; the prior takes at most 3
    prior = cached_prior("shapeworld-mv", None)
    observed = Observed(straight_rgba(train, (1.0, 1.0, 1.0), prior.image_size), train.cameras)
    recon = ReconConfig(steps=10, threads=1)
    recon.render.aabb, recon.render.near, recon.render.far = [-1.0] * 3 + [1.0] * 3, 1.0, 4.0
    fields = []
    for _ in range(2):
        trainer = ReconTrainer(recon, train.images, train.cameras, seed=3, alpha=train.alpha)
        before = {k: v.clone() for k, v in trainer.field.state_dict().items()}
        recording = RecordingPrior(prior)
        loss = ScoreRegularizer(trainer, recording, observed, ScoreRegularizerConfig(render_size=8), total=10)()
        assert loss > 0
        fields.append({k: v.clone() for k, v in trainer.field.state_dict().items()})
        assert any(not torch.equal(before[k], fields[-1][k]) for k in before)  # the step moved the field
    assert all(torch.equal(fields[0][k], fields[1][k]) for k in fields[0])  # seeded: the same step twice

    (targets, observed_cams), = recording.calls
    assert len(targets) == prior.views_per_set and len(observed_cams) == 3
    assert torch.allclose(targets.c2w[:, :3, 3].norm(dim=-1), torch.full((4,), PRIOR_RADIUS), atol=1e-4)
    mapped = to_prior_frame(train.cameras, scene_radius(train.cameras), prior.image_size)
    nearest = nearest_views(train.cameras, targets, 3)  # directions match in both frames
    assert torch.allclose(observed_cams.c2w, mapped.c2w[nearest])


@pytest.mark.skipif(not PRIOR_WEIGHTS.is_file(), reason="shapeworld-mv weights not shipped in this checkout")
def test_short_reconfusion_run_regularises_without_generated_views(shapeworld_scene, tmp_path):
    out = tmp_path / "run"
    assert main(["reconstruct", str(shapeworld_scene), "--views", "3", "--prior", "shapeworld-mv",
                 "--prior-mode", "reconfusion", "--config", str(CI_CONFIG), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["config"]["prior"]["mode"] == "reconfusion"
    assert [s["name"] for s in manifest["stages"]] == ["load", "train", "evaluate", "export"]
    assert not (out / "generated").exists()
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    # progress every 5 steps; the SDS step follows every third, so steps 15 and 30 report its loss
    assert [e["step"] for e in events if "sds_loss" in e] == [15, 30]
    assert 5 < manifest["metrics"]["psnr"] < 60 and 0 <= manifest["metrics"]["mask_iou"] <= 1


def test_prior_mode_needs_a_prior_and_a_known_name(shapeworld_scene, capsys):
    args = ["reconstruct", str(shapeworld_scene), "--config", str(CI_CONFIG), "--dry-run"]
    assert main(args + ["--prior-mode", "reconfusion"]) == 2
    assert "--prior" in capsys.readouterr().err
    assert main(args + ["--prior", "shapeworld-mv", "--prior-mode", "zero123"]) == 2
    assert "prior.mode" in capsys.readouterr().err
