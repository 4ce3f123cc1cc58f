"""The volume renderer on analytic fields, where the right answer is known in closed form."""

import math

import pytest
import torch

from gen3d.render.volume import (OccupancyConfig, OccupancyGrid, RenderConfig, VolumeRenderer, composite_packed,
                                 ray_aabb, step_distances, steps_between)

AABB = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]


class AnalyticField:
    """Density from a function of position, a constant colour; counts the points it shades."""

    def __init__(self, density_fn, rgb=(0.2, 0.4, 0.6)):
        self.density_fn = density_fn
        self.rgb = torch.tensor(rgb)
        self.evaluated = 0

    def geometry(self, x):
        self.evaluated += len(x)
        sigma = self.density_fn(x)
        return sigma, torch.zeros(len(x), 1) + 0 * sigma[:, None]

    def density(self, x):
        return self.geometry(x)[0]

    def color(self, features, d):
        return self.rgb.expand(len(features), 3)

    def normalize(self, x):
        return (x + 1) / 2

    def denormalize(self, u):
        return u * 2 - 1


def slab(sigma: float, thickness: float):
    """Constant density in |z| < thickness / 2 and |x| < 0.5, zero elsewhere."""
    return lambda x: torch.where((x[:, 2].abs() < thickness / 2) & (x[:, 0].abs() < 0.5),
                                 torch.full_like(x[:, 0], sigma), torch.zeros_like(x[:, 0]))


def down_rays(xs):
    origins = torch.stack([torch.as_tensor(xs, dtype=torch.float32), torch.zeros(len(xs)), torch.full((len(xs),), 3.0)], -1)
    return origins, torch.tensor([0.0, 0.0, -1.0]).expand(len(xs), 3).contiguous()


def renderer(**kwargs) -> VolumeRenderer:
    occupancy = kwargs.pop("occupancy", OccupancyConfig(enabled=False))
    return VolumeRenderer(RenderConfig(aabb=AABB, occupancy=occupancy, **kwargs))


@pytest.mark.parametrize("sigma,thickness", [(2.0, 0.5), (7.5, 0.3)])
def test_slab_opacity_matches_beer_lambert(sigma, thickness):
    field = AnalyticField(slab(sigma, thickness))
    origins, dirs = down_rays([-0.2, 0.0, 0.3, 0.8, -0.9])
    with torch.no_grad():
        out = renderer(step_size=0.0005, max_steps=8192).render_rays(field, origins, dirs, torch.ones(3))
    expected = 1 - math.exp(-sigma * thickness)
    torch.testing.assert_close(out["opacity"][:3], torch.full((3,), expected), atol=1e-3, rtol=0)
    assert out["opacity"][3:].abs().max().item() == 0.0  # rays beside the slab see nothing
    # colour composites onto the white background by the same opacity; depth is the slab's weighted mean
    torch.testing.assert_close(out["rgb"][0], field.rgb * expected + (1 - expected), atol=1e-3, rtol=0)
    assert 3 - thickness / 2 < out["depth"][0] / expected < 3


def test_early_stop_changes_nothing_but_the_work():
    field = AnalyticField(slab(40.0, 1.0))
    origins, dirs = down_rays(torch.linspace(-0.45, 0.45, 16).tolist())
    with torch.no_grad():
        full = renderer(step_size=0.005, early_stop=0.0).render_rays(field, origins, dirs, torch.ones(3))
        work_full = field.evaluated
        field.evaluated = 0
        stopped = renderer(step_size=0.005, early_stop=1e-4, chunk_steps=16).render_rays(field, origins, dirs, torch.ones(3))
    for key in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(stopped[key], full[key], atol=2e-4, rtol=0)
    assert field.evaluated < 0.5 * work_full


def test_packed_compositing_is_per_ray():
    sigma = torch.tensor([1.0, 2.0, 3.0, 0.5, 100.0])
    delta = torch.tensor([0.1, 0.2, 0.1, 0.4, 1.0])
    ray = torch.tensor([0, 0, 0, 2, 2])
    weights, tau = composite_packed(sigma, delta, ray, 3)
    expected = []
    for r in (0, 2):
        acc = 0.0
        for s, d in zip(sigma[ray == r].tolist(), delta[ray == r].tolist()):
            expected.append(math.exp(-acc) * (1 - math.exp(-s * d)))
            acc += s * d
    torch.testing.assert_close(weights, torch.tensor(expected))
    torch.testing.assert_close(tau, torch.tensor([0.8, 0.0, 100.2]))


def test_ray_box_and_growing_steps():
    t0, t1 = ray_aabb(torch.tensor([[0.0, 0.0, 3.0], [5.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]] * 2),
                      torch.tensor(AABB).reshape(2, 3))
    assert (t0[0].item(), t1[0].item()) == (2.0, 4.0)
    assert t1[1] < t0[1]  # a miss
    k = torch.arange(200, dtype=torch.float32)
    t = step_distances(torch.tensor(0.1), k, 0.01, 0.05)  # switches to growing steps at t = 0.2
    steps = t[1:] - t[:-1]
    assert (steps >= 0.01 - 1e-5).all()
    # uniform while t * cone < step, then each step is (1 + cone) times the previous
    assert steps[0].item() == pytest.approx(0.01, rel=1e-4)
    torch.testing.assert_close(steps[-1] / steps[-2], torch.tensor(1.05), rtol=1e-4, atol=0)
    torch.testing.assert_close(steps_between(torch.tensor(0.1), t, 0.01, 0.05), k, rtol=0, atol=1e-3)
    # even in inverse distance: 128 steps from 1 to 6, each 1/t apart by (1 - 1/6) / 128
    k = torch.arange(129, dtype=torch.float32)
    t = step_distances(torch.tensor(1.0), k, 0.01, 0.0, inverse_step=(1 - 1 / 6) / 128)
    assert t[0].item() == 1.0 and t[-1].item() == pytest.approx(6.0, rel=1e-4)
    torch.testing.assert_close(1 / t[:-1] - 1 / t[1:], torch.full((128,), (1 - 1 / 6) / 128), rtol=1e-3, atol=0)
    torch.testing.assert_close(steps_between(torch.tensor(1.0), t, 0.01, 0.0, (1 - 1 / 6) / 128), k, rtol=0, atol=1e-3)


def ball(radius: float, sigma: float = 30.0, sharpness: float = 40.0):
    return lambda x: sigma * torch.sigmoid(sharpness * (radius - x.norm(dim=-1)))


def test_occupancy_grid_skips_empty_space_without_changing_the_image():
    field = AnalyticField(ball(0.4, sharpness=200.0))
    origins, dirs = down_rays(torch.linspace(-0.9, 0.9, 25).tolist())
    plain = renderer(step_size=0.01)
    occ = renderer(step_size=0.01, occupancy=OccupancyConfig(resolution=32, warmup_steps=0, threshold=0.001))
    occ.update_occupancy(field, 0, torch.Generator().manual_seed(0))
    grid = occ.occupancy.mask
    assert 0.01 < grid.float().mean().item() < 0.2  # about the ball's volume share of the box, dilated
    with torch.no_grad():
        field.evaluated = 0
        ref = plain.render_rays(field, origins, dirs, torch.ones(3))
        work_plain = field.evaluated
        field.evaluated = 0
        got = occ.render_rays(field, origins, dirs, torch.ones(3))
    torch.testing.assert_close(got["opacity"], ref["opacity"], atol=1e-2, rtol=0)  # one jittered read per cell
    assert field.evaluated < 0.3 * work_plain


def test_occupancy_restrict_is_permanent():
    grid = OccupancyGrid(OccupancyConfig(resolution=8))
    keep = torch.zeros(8**3, dtype=torch.bool)
    keep[:10] = True
    grid.restrict(keep)
    grid.update(lambda u: torch.full((len(u),), 100.0), step=0.01, generator=torch.Generator().manual_seed(0))
    assert grid.mask.sum().item() == 10


def test_normals_point_out_of_a_ball():
    field = AnalyticField(ball(0.5, sigma=200.0))
    xs = torch.linspace(-0.3, 0.3, 7)
    origins, dirs = down_rays(xs.tolist())
    with torch.no_grad():
        out = renderer(step_size=0.005).render_rays(field, origins, dirs, torch.ones(3), normals=True)
    surface = torch.stack([xs, torch.zeros(7), (0.25 - xs**2).sqrt()], -1)
    cos = torch.nn.functional.cosine_similarity(out["normals"], surface / 0.5, dim=-1)
    assert (cos > 0.99).all()


def test_random_background_only_when_training():
    r = renderer(background="random")
    g = torch.Generator().manual_seed(0)
    train_bg = r.background(4, g)
    assert train_bg.std(0).min() > 0.01
    torch.testing.assert_close(r.background(4), torch.ones(4, 3))
