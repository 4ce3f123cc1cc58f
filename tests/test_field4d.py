"""The space-time (4D) field: fitting a moving sphere, per-time export, fixed memory, bit-identical resume."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from gen3d.cameras import Cameras, generate_rays, project
from gen3d.config import load_config
from gen3d.errors import UserError
from gen3d.export import clean_mesh, extract_mesh
from gen3d.fields import NerfField, SpacetimeConfig, SpacetimeField, field_megabytes
from gen3d.recon import ReconConfig, ReconTrainer
from gen3d.recon.hull import visual_hull
from gen3d.render.mesh import ShadingConfig, render_mesh
from gen3d.shapeworld.scenes import eval_cameras, sample_cameras

CI_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "recon" / "ci.yaml"
RADIUS = 0.3
SIZE = 32
FRAMES = 8
VIEWS_PER_FRAME = 4
SPHERE = trimesh.creation.icosphere(subdivisions=3, radius=RADIUS)


def centre(t: float) -> torch.Tensor:
    """The sphere's centre moves along x from -0.4 to 0.4 as t goes from 0 to 1."""
    return torch.tensor([-0.4 + 0.8 * t, 0.0, 0.0])


def sphere_views(cams: Cameras, t: float) -> torch.Tensor:
    """RGBA (N, H, W, 4) of the sphere at time t, from gen3d's mesh renderer."""
    mesh = SPHERE.copy().apply_translation(centre(t).numpy())
    return render_mesh(mesh, cams, shading=ShadingConfig(), color=(0.9, 0.4, 0.2)).rgba


def moving_sphere(frames: int, views: int, size: int, seed: int = 0) -> tuple[torch.Tensor, Cameras, torch.Tensor]:
    """`views` random ShapeWorld cameras at each of `frames` evenly spaced times: images, cameras, times."""
    rng = np.random.default_rng(seed)
    times = torch.linspace(0, 1, frames).repeat_interleave(views)
    cams = Cameras.cat([sample_cameras(rng, views, size) for _ in range(frames)])
    images = torch.cat([sphere_views(cams[i * views:(i + 1) * views], times[i * views].item()) for i in range(frames)])
    return images, cams, times


def config(*overrides: str) -> ReconConfig:
    return load_config(ReconConfig, CI_CONFIG, ["spacetime.enabled=true", *overrides])


@pytest.fixture(scope="module")
def fitted() -> ReconTrainer:
    images, cams, times = moving_sphere(FRAMES, VIEWS_PER_FRAME, SIZE)
    trainer = ReconTrainer(config("steps=300", "batch_rays=512", "mask_loss_weight=1.0"), images, cams, seed=0,
                           times=times)
    trainer.train(300)
    return trainer


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a & b).sum((1, 2)) / (a | b).sum((1, 2))


def alpha_centroid(alpha: torch.Tensor) -> torch.Tensor:
    """(N, 2) alpha-weighted mean pixel position (u, v), pixel centres at +0.5 like `project`."""
    v, u = torch.meshgrid(torch.arange(alpha.shape[1]) + 0.5, torch.arange(alpha.shape[2]) + 0.5, indexing="ij")
    mass = alpha.sum((1, 2))
    return torch.stack([(alpha * u).sum((1, 2)) / mass, (alpha * v).sum((1, 2)) / mass], -1)


# training frames at k/7; 1/14 sits between the first two frames, on a time node no frame lands on
@pytest.mark.parametrize("t", [0.0, 1 / 14, 2 / 7, 0.5, 1.0])
def test_fit_follows_the_moving_sphere_at_held_out_cameras(fitted, t):
    cams = eval_cameras(SIZE)[[0, 2, 4, 6]]  # elevation 15 deg, azimuths 0, 90, 180, 270: never trained on
    truth = sphere_views(cams, t)[..., 3] >= 0.5
    opacity = fitted.render(cams, times=t)["opacity"]
    iou = mask_iou(opacity >= 0.5, truth)
    assert iou.min() >= 0.8, iou
    projected = project(centre(t)[None], cams)[0][:, 0]  # (4, 2) pixel of the true centre
    error = (alpha_centroid(opacity) - projected).norm(dim=-1)
    assert error.max() < 1.0, error


def test_at_time_is_a_static_field_for_renderer_and_mesh_export(fitted):
    cams = eval_cameras(SIZE)[[2]]
    per_ray = fitted.render(cams, times=0.5)["opacity"]
    origins, dirs = (r.reshape(-1, 3) for r in generate_rays(cams))
    with torch.no_grad():
        at_time = fitted.renderer.render_rays(fitted.field.at_time(0.5), origins, dirs, torch.ones(3))
    torch.testing.assert_close(at_time["opacity"].reshape(per_ray.shape), per_ray)
    for t in (0.0, 0.5, 1.0):
        frame = fitted.field.at_time(t)
        raw = extract_mesh(frame.density, frame.aabb, 48, threshold=10.0,
                           color_fn=lambda x, frame=frame: frame(x, torch.nn.functional.normalize(-x, dim=-1))[1])
        mesh = clean_mesh(raw)  # the export's cleaning: unseen space below and around the object floats away
        lo, hi = mesh.bounds
        torch.testing.assert_close(torch.tensor((lo + hi) / 2, dtype=torch.float32), centre(t), atol=0.06, rtol=0)
        assert np.allclose(hi - lo, 2 * RADIUS, atol=0.12), hi - lo
        assert (mesh.visual.vertex_colors[:, 0] > mesh.visual.vertex_colors[:, 2]).mean() > 0.9  # orange, not blue


def test_union_over_times_carving_keeps_the_object_at_every_time(fitted):
    grid = fitted.renderer.occupancy
    ends = torch.stack([centre(0.0), centre(1.0)])
    assert grid.occupied(fitted.field.normalize(ends)).all()  # the union-of-times hull and the trained grid
    assert grid.hull.float().mean() < 0.8
    # carving with all views at once, as for a static object, would empty where the sphere starts and ends
    static = visual_hull(ends, 0.05, fitted.cameras, fitted.alpha[..., 0])
    assert not static.any()


def test_field_memory_does_not_grow_with_frames():
    cfg = config()
    sizes = []
    for frames in (8, 32):
        cams = Cameras.cat([sample_cameras(np.random.default_rng(frames), 2, 16) for _ in range(frames)])
        times = torch.linspace(0, 1, frames).repeat_interleave(2)
        trainer = ReconTrainer(cfg, torch.zeros(len(cams), 16, 16, 3), cams, times=times)
        sizes.append((sum(p.numel() for p in trainer.field.parameters()), field_megabytes(trainer.field)))
    assert sizes[0] == sizes[1]
    assert 0.05 < sizes[0][1] < 1.0


def test_a_fresh_spacetime_field_is_the_static_field_at_every_time():
    cfg = config().field
    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    static = NerfField(cfg, aabb, generator=torch.Generator().manual_seed(5))
    moving = SpacetimeField(cfg, SpacetimeConfig(), aabb, generator=torch.Generator().manual_seed(5))
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        for t in (0.0, 0.37, 1.0):
            torch.testing.assert_close(moving.at_time(t).density(x), static.density(x))
    assert moving.regularization().item() == 0.0


def test_resume_is_bit_identical_in_4d():
    images, cams, times = moving_sphere(3, 3, 16)
    cfg = config("batch_rays=256", "render.occupancy.update_every=3", "render.occupancy.warmup_steps=4")
    straight = ReconTrainer(cfg, images, cams, seed=3, times=times)
    straight.train(12)
    first = ReconTrainer(cfg, images, cams, seed=3, times=times)
    first.train(6)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = ReconTrainer(cfg, images, cams, seed=99, times=times)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    resumed.train(6)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and "field.encoding.planes" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["field.encoding.planes"], torch.ones_like(a["field.encoding.planes"]))
    view = cams[[0]]
    assert torch.equal(straight.render(view, times=0.3)["rgb"], resumed.render(view, times=0.3)["rgb"])


def test_times_and_config_must_agree():
    images, cams = torch.zeros(4, 16, 16, 4), sample_cameras(np.random.default_rng(0), 4, 16)
    times = torch.tensor([0.0, 0.0, 1.0, 1.0])
    static_cfg = load_config(ReconConfig, CI_CONFIG, [])
    with pytest.raises(UserError, match="spacetime.enabled"):
        ReconTrainer(static_cfg, images, cams, times=times)
    with pytest.raises(UserError, match="spacetime.enabled"):
        ReconTrainer(config(), images, cams)
    with pytest.raises(UserError, match="one value in"):
        ReconTrainer(config(), images, cams, times=torch.tensor([0.0, 0.5, 1.0, 1.5]))
    with pytest.raises(UserError, match="time_resolution"):
        ReconTrainer(config("spacetime.time_resolution=1"), images, cams, times=times)
    trainer = ReconTrainer(config(), images, cams, times=times)
    with pytest.raises(ValueError, match="time"):
        trainer.render(cams)
    with pytest.raises(ValueError, match="static"):
        ReconTrainer(static_cfg, images, cams).render(cams, times=0.5)
