"""Real-capture handling: the field's space per kind of scene, photo appearance, and a tiny
forward-facing capture (an LLFF folder of two textured planes) trained end to end."""

import numpy as np
import pytest
import torch
from PIL import Image

from gen3d.cameras import Cameras, generate_rays, look_at
from gen3d.config import from_dict
from gen3d.data import load_scene
from gen3d.pipelines import reconstruct
from gen3d.recon.appearance import PhotoAppearance

W, H, FOCAL = 40, 30, 36.0


def _two_planes(origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """RGB of rays hitting a card (z = -2.5, 1.2 x 0.9) in front of a patterned wall (z = -5)."""
    t_card = (-2.5 - origins[:, 2]) / dirs[:, 2]
    card = origins + t_card[:, None] * dirs
    on_card = (card[:, 0].abs() < 0.6) & (card[:, 1].abs() < 0.45)
    wall = origins + ((-5 - origins[:, 2]) / dirs[:, 2])[:, None] * dirs
    wall_rgb = torch.stack([0.5 + 0.4 * torch.sin(2.5 * wall[:, 0]), 0.5 + 0.4 * torch.cos(2.0 * wall[:, 1]),
                            torch.full_like(wall[:, 0], 0.3)], -1)
    card_rgb = torch.stack([0.9 - 0.3 * (card[:, 1] + 0.45), torch.full_like(card[:, 0], 0.2),
                            0.2 + 0.5 * (card[:, 0] + 0.6)], -1)
    return torch.where(on_card[:, None], card_rgb, wall_rgb).clamp(0, 1)


def _forward_facing_capture(root, n: int = 12) -> None:
    """An LLFF folder: cameras on a 0.6 x 0.4 grid at z = 0 looking down -z, bounds 2 to 5.5."""
    eyes = torch.tensor([[x, y, 0.0] for y in np.linspace(-0.2, 0.2, 3) for x in np.linspace(-0.3, 0.3, n // 3)])
    c2w = look_at(eyes, eyes + torch.tensor([0.0, 0.0, -1.0]), up=torch.tensor([0.0, 1.0, 0.0]))
    cams = Cameras(c2w, torch.tensor(FOCAL), torch.tensor(FOCAL), torch.tensor(W / 2), torch.tensor(H / 2), W, H)
    origins, dirs = generate_rays(cams)
    images = _two_planes(origins.reshape(-1, 3), dirs.reshape(-1, 3)).reshape(n, H, W, 3)
    (root / "images").mkdir()
    rows = []
    for i in range(n):
        Image.fromarray((images[i].numpy() * 255).round().astype(np.uint8)).save(root / "images" / f"{i:03d}.png")
        m = c2w[i].double().numpy()
        llff = np.stack([-m[:3, 1], m[:3, 0], m[:3, 2], m[:3, 3], [H, W, FOCAL]], 1)  # [down, right, back, t, hwf]
        rows.append(np.concatenate([llff.reshape(-1), [2.0, 5.5]]))
    np.save(root / "poses_bounds.npy", np.stack(rows))


def _scene(scene_type: str, alpha: bool):
    """A scene outline for `recon_config`: only type, bounds, cameras and alpha matter there."""
    cams = Cameras(look_at(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -1.0]])), torch.tensor(FOCAL),
                   torch.tensor(FOCAL), torch.tensor(W / 2), torch.tensor(H / 2), W, H)
    split = type("Split", (), {"cameras": cams, "alpha": torch.ones(1, H, W, 1) if alpha else None})()
    return type("Scene", (), {"scene_type": scene_type, "aabb": torch.tensor([[-1.0] * 3, [1.0] * 3]),
                              "near": 1.0, "far": 6.0, "background": (1.0, 1.0, 1.0), "train": split})()


@pytest.mark.parametrize("scene_type, alpha, space, appearance", [
    ("bounded", True, "box", False), ("bounded", False, "box", False),
    ("unbounded", False, "contract", True), ("forward_facing", False, "ndc", True),
])
def test_space_and_appearance_follow_the_scene_unless_configured(scene_type, alpha, space, appearance):
    cfg = from_dict(reconstruct.Config, {})
    recon = reconstruct.recon_config(cfg, _scene(scene_type, alpha))
    assert (recon.field.space, recon.appearance) == (space, appearance)
    if space == "ndc":  # the grid is a perspective box: inverse depths between 1/far and 1/near, padded
        lo, hi = recon.render.aabb[2], recon.render.aabb[5]
        assert lo < 1 / 6.0 < 1 / 1.0 < hi < 1.1
    forced = from_dict(reconstruct.Config, {"recon": {"field": {"space": "box"}, "appearance": False}})
    assert (reconstruct.recon_config(forced, _scene(scene_type, alpha)).field.space, forced.recon.appearance) == (
        "box", False)


def test_photo_appearance_starts_at_identity_and_explains_an_exposure_change():
    appearance, g = PhotoAppearance(3), torch.Generator().manual_seed(0)
    rgb, view = torch.rand(64, 3, generator=g), torch.randint(3, (64,), generator=g)
    torch.testing.assert_close(appearance(rgb, view), rgb)
    target = torch.where((view == 1)[:, None], rgb * 1.3, rgb)  # photo 1 was over-exposed
    optimiser = torch.optim.Adam(appearance.parameters(), lr=0.05)
    for _ in range(300):
        loss = (appearance(rgb, view) - target).square().mean() + 0.01 * appearance.penalty()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        assert (appearance(rgb, view) - target).abs().max() < 0.02
        gain = appearance.log_gain.exp()
    assert (gain[1] / gain[0]).tolist() == pytest.approx([1.3] * 3, rel=0.06)


def test_tiny_forward_facing_capture_trains_in_ndc_space(tmp_path):
    """12 photos of two planes 2.5 and 5 units away: read as LLFF, trained in the perspective grid
    with steps even in inverse depth, the held-out photos are reproduced to over 23 dB (24.9 measured)."""
    _forward_facing_capture(tmp_path)
    cfg = from_dict(reconstruct.Config, {"data": {"downscale": 1}, "capture": {"batch_rays": 256}, "recon": {
        "steps": 200, "threads": 1, "render": {"disparity_steps": 32}}})
    data = reconstruct.load_data(cfg, str(tmp_path))
    assert data.scene.scene_type == "forward_facing" and len(data.holdout) == 2
    trainer = reconstruct._trainer(cfg, data, 0)
    assert trainer.field.space == "ndc" and trainer.appearance is not None
    assert (trainer.cfg.batch_rays, trainer.cfg.optim.lr) == (256, 0.02)  # the capture settings
    trainer.train(cfg.recon.steps)
    result = trainer.evaluate(data.holdout.images, data.holdout.cameras)
    assert result["psnr"] > 23.0, result["psnr"]
