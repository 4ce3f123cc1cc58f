"""Fitting a field: metrics, a tiny end-to-end reconstruction, and bit-identical resume."""

import io
from pathlib import Path

import pytest
import torch

from gen3d.cameras import Cameras, generate_rays, orbit
from gen3d.config import load_config
from gen3d.errors import UserError
from gen3d.recon import ReconConfig, ReconTrainer, psnr, ssim

CI_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "recon" / "ci.yaml"


def sphere_views(cams: Cameras, radius: float = 0.6) -> torch.Tensor:
    """RGBA renders of a ball coloured by its normal (0.5 + 0.5 n), transparent elsewhere."""
    o, d = generate_rays(cams)
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + radius**2
    t = -b - disc.clamp_min(0).sqrt()
    hit = (disc > 0) & (t > 0)
    normal = torch.nn.functional.normalize(o + t[..., None] * d, dim=-1)
    rgb = torch.where(hit[..., None], 0.5 + 0.5 * normal, torch.zeros(3))
    return torch.cat([rgb, hit[..., None].float()], -1)


def ci_config(*overrides: str) -> ReconConfig:
    return load_config(ReconConfig, CI_CONFIG, list(overrides))


def train_cameras() -> Cameras:
    az = torch.arange(12) * 30.0
    el = torch.tensor([10.0, 35.0, 60.0]).repeat(4)
    return orbit(el, az, 2.5, 40.0, 32, 32)


def test_psnr_and_ssim_values():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 24, 24, 3, generator=g)
    assert psnr(a, a + 0.1).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    noisy = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    ref = structural_similarity(a[0].numpy(), noisy[0].numpy(), channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0)
    assert ssim(a, noisy)[0].item() == pytest.approx(ref, abs=1e-4)
    assert ref < 0.9


def test_tiny_sphere_beats_mean_colour_by_8db():
    cams = train_cameras()
    images = sphere_views(cams)
    held_out = orbit(torch.tensor([20.0, 50.0]), torch.tensor([15.0, 200.0]), 2.5, 40.0, 32, 32)
    truth = sphere_views(held_out)
    trainer = ReconTrainer(ci_config(), images, cams, seed=0)
    trainer.train(150)
    result = trainer.evaluate(truth, held_out)
    white = truth[..., :3] * truth[..., 3:] + (1 - truth[..., 3:])
    mean_colour = white.reshape(-1, 3).mean(0).expand_as(white)
    baseline = psnr(mean_colour, white).mean().item()
    assert result["psnr"] > baseline + 8, (result["psnr"], baseline)
    assert result["renders"].shape == (2, 32, 32, 3)
    # the learned geometry is a ball: opaque at the centre of the view, empty at the corner
    opacity = trainer.render(held_out)["opacity"]
    assert opacity[:, 16, 16].min() > 0.9 and opacity[:, 0, 0].max() < 0.1


def params(trainer: ReconTrainer) -> dict:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resume_is_bit_identical():
    cams = train_cameras()
    images = sphere_views(cams)
    weights = torch.linspace(0.5, 1.5, len(cams))
    cfg = ci_config("batch_rays=256", "render.occupancy.update_every=3", "render.occupancy.warmup_steps=4")

    straight = ReconTrainer(cfg, images, cams, seed=3, view_weights=weights)
    straight.train(12)

    first = ReconTrainer(cfg, images, cams, seed=3, view_weights=weights)
    first.train(6)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = ReconTrainer(cfg, images, cams, seed=99, view_weights=weights)  # the seed comes from the checkpoint
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    resumed.train(6)

    a, b = params(straight), params(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    view = orbit(torch.tensor([30.0]), torch.tensor([45.0]), 2.5, 40.0, 16, 16)
    assert torch.equal(straight.render(view)["rgb"], resumed.render(view)["rgb"])
    # and training actually moved the parameters
    assert not torch.equal(a["field.color_mlp.2.weight"], ReconTrainer(cfg, images, cams, seed=3).field.color_mlp[2].weight)


def test_mask_loss_and_view_weights_change_the_fit():
    cams = train_cameras()
    images = sphere_views(cams)
    base = ReconTrainer(ci_config("batch_rays=256"), images, cams, seed=0)
    masked = ReconTrainer(ci_config("batch_rays=256", "mask_loss_weight=1.0"), images, cams, seed=0)
    assert base.step()["loss"] < masked.step()["loss"]  # same batch, plus a mask term
    silenced = torch.zeros(len(cams))
    silenced[0] = 1.0
    one_view = ReconTrainer(ci_config("batch_rays=256"), images, cams, seed=0, view_weights=silenced)
    assert one_view.step()["loss"] != base.step()["loss"]


def test_composited_images_with_alpha_train_like_rgba():
    cams = train_cameras()
    rgba = sphere_views(cams)
    white = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    cfg = ci_config("batch_rays=256")
    a = ReconTrainer(cfg, rgba, cams, seed=0)
    b = ReconTrainer(cfg, white, cams, seed=0, alpha=rgba[..., 3])
    assert b.renderer.occupancy.hull.float().mean() < 0.5  # alpha carved the grid
    torch.testing.assert_close(a.renderer.occupancy.hull, b.renderer.occupancy.hull)
    assert [a.step()["loss"] for _ in range(3)] == pytest.approx([b.step()["loss"] for _ in range(3)], rel=1e-4)


def test_bad_inputs_are_user_errors():
    cams = train_cameras()
    with pytest.raises(UserError, match="cameras"):
        ReconTrainer(ci_config(), torch.zeros(3, 32, 32, 4), cams)
    with pytest.raises(UserError, match="images"):
        ReconTrainer(ci_config(), torch.zeros(12, 32, 32), cams)


def test_a_step_with_a_non_finite_loss_changes_nothing_and_is_counted():
    """One NaN pixel in a batch must not turn every weight into NaN (a 4D fit once did): the
    step is skipped, counted in the stats and in the checkpoint, and densities stay finite."""
    from gen3d.fields.nerf import TruncExp

    cams = train_cameras()
    images = sphere_views(cams)
    images[..., :3] = float("nan")  # every batch meets it
    trainer = ReconTrainer(ci_config(), images, cams, seed=0)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    stats = trainer.step()
    assert stats["skipped_steps"] == 1 and trainer.step_count == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert trainer.state_dict()["skipped_steps"] == 1
    assert torch.isfinite(TruncExp.apply(torch.tensor([100.0, 1e4]))).all()  # no overflow to inf
