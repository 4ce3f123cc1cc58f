"""The prior's per-view upsampler: the network, its training job, its place in the prior folder and
what the shipped one buys over bilinear upsampling on ShapeWorld renders it never saw."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gen3d.cli import main
from gen3d.errors import UserError
from gen3d.models.autoencoder import from_model_space, to_model_space
from gen3d.models.shapeworld_prior import ASSETS, add_upsampler, load, load_autoencoder, verify_folder
from gen3d.models.upsampler import UpsamplerConfig, ViewUpsampler, upsampling_metrics
from gen3d.shapeworld.dataset import render_spec
from gen3d.shapeworld.scenes import eval_cameras
from gen3d.shapeworld.spec import HELD_OUT, SceneSpec

REPO = Path(__file__).resolve().parents[1]
SHIPPED_UPSAMPLER = (ASSETS / "upsampler" / "config.json").is_file()


def _renders(size: int, count: int = 3) -> torch.Tensor:
    """Held-out ShapeWorld objects (never in any training cache) at the 8 evaluation cameras."""
    specs = [SceneSpec(shape, colour, "large") for shape, colour in sorted(HELD_OUT)[:count]]
    return torch.cat([render_spec(s, eval_cameras(size)).rgba.permute(0, 3, 1, 2).float() for s in specs])


def test_untrained_upsampler_is_exactly_bilinear_and_round_trips_its_folder(tmp_path):
    net = ViewUpsampler(UpsamplerConfig(channels=8, blocks=1))
    rgba = _renders(64, 1)
    bilinear = from_model_space(F.interpolate(to_model_space(rgba), scale_factor=2, mode="bilinear"))
    assert torch.equal(net.upsample_rgba(rgba), bilinear)
    torch.nn.init.normal_(net.tail.weight, std=0.1)
    net.save_pretrained(tmp_path / "up")
    again = ViewUpsampler.from_pretrained(tmp_path / "up")
    assert again.cfg == net.cfg
    assert torch.allclose(again.upsample_rgba(rgba), net.upsample_rgba(rgba), atol=1e-6)


@pytest.mark.skipif(not SHIPPED_UPSAMPLER, reason="no upsampler shipped")
def test_shipped_upsampler_beats_bilinear_on_held_out_renders():
    """The 128 px view it makes from the prior's own 64 px decoding is closer to the true 128 px
    render than bilinear upsampling of that decoding, in colour and outline."""
    prior = load()
    truth = _renders(128)
    ae = prior.autoencoder
    ours, bilinear = upsampling_metrics(prior.upsampler, ae, truth), upsampling_metrics(None, ae, truth)
    assert ours["psnr"] > bilinear["psnr"] + 1.0
    assert ours["alpha_iou"] > bilinear["alpha_iou"]


@pytest.mark.skipif(not SHIPPED_UPSAMPLER, reason="no upsampler shipped")
def test_sample_returns_views_at_the_cameras_size():
    prior = load()
    assert prior.output_size == 128 and prior.image_size == 64
    latents = prior.encode(_renders(64, 1)[:2])
    cams = eval_cameras(128)[:2]
    big, small = prior.finish(latents, cams), prior.finish(latents, eval_cameras(64)[:2])
    assert big.shape == (2, 4, 128, 128) and small.shape == (2, 4, 64, 64)
    # the upsampler adds detail, it does not move the object: pooled back down it is the 64 px view
    assert (F.avg_pool2d(big, 2) - small).abs().mean() < 0.02
    assert prior.finish(latents, eval_cameras(32)[:2]).shape == (2, 4, 32, 32)


def test_ci_upsampler_training_writes_a_loadable_prior_with_128_px_views(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the config names the shipped prior by repository path
    run = tmp_path / "run"
    assert main(["train", "configs/ci/train-upsampler.yaml", "--set", f"data.cache_dir={tmp_path / 'cache'}",
                 "--set", f"upsampler.prior={tmp_path / 'base'}", "--out", str(run)]) == 2  # no such prior
    assert main(["train", "configs/ci/train-upsampler.yaml", "--set", "data.size=64", "--out", str(run)]) == 2
    assert not run.exists() and not (tmp_path / "cache").exists()
    shutil.copytree(ASSETS, tmp_path / "base", ignore=shutil.ignore_patterns("upsampler"))
    manifest = json.loads((tmp_path / "base" / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("upsampler/")}
    (tmp_path / "base" / "manifest.json").write_text(json.dumps(manifest))
    assert main(["train", "configs/ci/train-upsampler.yaml", "--set", f"data.cache_dir={tmp_path / 'cache'}",
                 "--set", f"upsampler.prior={tmp_path / 'base'}", "--out", str(run)]) == 0
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["stage"] == "upsampler" and "loss" in e]
    assert len(losses) == 6 and np.mean(losses[-2:]) < losses[0]
    metrics = json.loads((run / "manifest.json").read_text())["metrics"]
    assert metrics["upsampler_psnr"] > metrics["bilinear_psnr"] - 0.5  # 60 steps from bilinear: not worse
    prior = load(run / "prior")
    assert json.loads((run / "prior" / "prior.json").read_text())["output_size"] == 128
    out = prior.sample("a red cube", eval_cameras(128)[:4], steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 4, 128, 128) and torch.isfinite(out).all()
    (run / "prior" / "upsampler" / "model.safetensors").write_bytes(b"damaged")
    with pytest.raises(UserError, match="upsampler/model.safetensors: sha256"):
        verify_folder(run / "prior")


def test_adding_an_upsampler_to_a_damaged_prior_is_refused(tmp_path):
    base = tmp_path / "base"
    shutil.copytree(ASSETS, base)
    (base / "prior.json").write_text("{}")
    with pytest.raises(UserError, match="prior.json: sha256"):
        add_upsampler(base, tmp_path / "out", ViewUpsampler(UpsamplerConfig(8, 1)), {})
    assert not (tmp_path / "out").exists()
    assert load_autoencoder(base / "autoencoder").config.scaling_factor > 0
