"""Camera conventions: OpenGL/OpenCV, look_at, projection, rays, Plücker coordinates, orbits."""

import math

import pytest
import torch

from gen3d.cameras import (
    Cameras,
    from_fov,
    generate_rays,
    look_at,
    opencv_to_opengl,
    opengl_to_opencv,
    orbit,
    plucker,
    project,
    turntable,
    unproject,
)


def _rigid(c2w: torch.Tensor) -> bool:
    rot = c2w[..., :3, :3]
    eye = torch.eye(3).expand_as(rot)
    orthonormal = torch.allclose(rot.transpose(-1, -2) @ rot, eye, atol=1e-5)
    return bool(orthonormal and torch.allclose(torch.linalg.det(rot), torch.ones(())))


def _camera(eye, width=128, height=96, f=100.0) -> Cameras:
    return Cameras(look_at(torch.tensor(eye)), f, f, 64.0, 48.0, width, height)


def test_opencv_opengl_round_trip_and_axes():
    c2w = look_at(torch.tensor([[3.0, -1.0, 2.0], [0.5, 2.0, -1.0]]))
    assert torch.equal(opencv_to_opengl(opengl_to_opencv(c2w)), c2w)
    # An OpenCV camera at the identity looks down world +z with image y pointing down (world -y up).
    gl = opencv_to_opengl(torch.eye(4))
    assert torch.equal(-gl[:3, 2], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(gl[:3, 1], torch.tensor([0.0, -1.0, 0.0]))
    assert torch.equal(gl[:3, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_look_at_puts_target_on_optical_axis():
    eyes = torch.tensor([[3.0, 1.0, 2.0], [-2.0, 4.0, 0.5], [0.1, -3.0, -1.0]])
    target = torch.tensor([0.5, -0.2, 0.3])
    c2w = look_at(eyes, target)
    assert _rigid(c2w)
    cams = Cameras(c2w, torch.tensor(80.0), torch.tensor(80.0), torch.tensor(40.0), torch.tensor(30.0), 80, 60)
    pixels, depth = project(target[None], cams)
    assert torch.allclose(pixels[:, 0], torch.tensor([40.0, 30.0]).expand(3, 2), atol=1e-4)
    assert torch.allclose(depth[:, 0], (eyes - target).norm(dim=-1), atol=1e-5)
    # World z is up: every camera's up axis leans towards +z, its right axis is horizontal.
    assert (c2w[:, 2, 1] > 0).all() and torch.allclose(c2w[:, 2, 0], torch.zeros(3), atol=1e-6)


def test_look_at_straight_down_is_still_a_rigid_camera():
    c2w = look_at(torch.tensor([0.0, 0.0, 3.0]))
    assert _rigid(c2w)
    assert torch.allclose(-c2w[:3, 2], torch.tensor([0.0, 0.0, -1.0]))


def test_projecting_a_known_point_lands_on_a_known_pixel():
    # Camera on +x looking at the origin: right is +y, up is +z, depth is 5 - x.
    cams = _camera([5.0, 0.0, 0.0])
    pixels, depth = project(torch.tensor([[0.0, 1.0, 0.5]]), cams)
    assert torch.allclose(pixels[0, 0], torch.tensor([64.0 + 100.0 * 1.0 / 5.0, 48.0 - 100.0 * 0.5 / 5.0]), atol=1e-4)
    assert depth[0, 0].item() == pytest.approx(5.0)


def test_rays_through_pixel_centres_hit_the_points_they_project_from():
    cams = Cameras.cat([_camera([4.0, 1.0, 2.0], 16, 12, 20.0), _camera([-3.0, 2.0, 1.0], 16, 12, 20.0)])
    origins, dirs = generate_rays(cams)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(2, 12, 16))
    points = origins + 2.5 * dirs  # one point along every ray
    j, i = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(12) + 0.5, indexing="xy")
    centres = torch.stack([j, i], -1).reshape(-1, 2)
    for n in range(2):
        pixels, depth = project(points[n].reshape(-1, 3), cams[n])
        assert torch.allclose(pixels[0], centres, atol=1e-3)
        assert (depth > 0).all()
        back = unproject(centres, depth[0], cams[n])
        assert torch.allclose(back[0], points[n].reshape(-1, 3), atol=1e-4)


def test_plucker_moment_is_the_same_from_any_point_on_the_ray():
    cams = _camera([2.0, -3.0, 1.5], 8, 6, 10.0)
    rays = plucker(cams)  # (1, 6, H, W)
    assert rays.shape == (1, 6, 6, 8)
    origins, dirs = generate_rays(cams)
    moment = rays[0, 3:].permute(1, 2, 0)
    for t in (0.0, 1.7, -4.2):
        assert torch.allclose(torch.linalg.cross(origins[0] + t * dirs[0], dirs[0], dim=-1), moment, atol=1e-5)
    assert torch.allclose((rays[0, :3] * rays[0, 3:]).sum(0), torch.zeros(6, 8), atol=1e-5)  # d . m = 0


def test_orbit_azimuth_zero_is_on_plus_x_and_ninety_on_plus_y():
    cams = orbit([0.0, 0.0, 30.0], [0.0, 90.0, 180.0], radius=2.5, fov_y_deg=40.0, width=32, height=32)
    expected = torch.tensor([[2.5, 0.0, 0.0], [0.0, 2.5, 0.0], [-2.5 * math.cos(math.radians(30)), 0.0, 1.25]])
    assert torch.allclose(cams.centers, expected, atol=1e-5)
    pixels, _ = project(torch.zeros(1, 3), cams)  # all look at the origin
    assert torch.allclose(pixels[:, 0], torch.full((3, 2), 16.0), atol=1e-4)
    assert torch.allclose(cams.fov_y, torch.full((3,), math.radians(40.0)))


def test_turntable_spacing_and_start():
    cams = turntable(8, elevation_deg=15.0, radius=2.0, fov_y_deg=40.0, width=16, height=16)
    azimuths = torch.rad2deg(torch.atan2(cams.centers[:, 1], cams.centers[:, 0])) % 360
    assert torch.allclose(azimuths, torch.arange(8) * 45.0, atol=1e-3)
    assert torch.allclose(cams.centers[:, 2], torch.full((8,), 2.0 * math.sin(math.radians(15))))


def test_resized_keeps_rays_through_the_same_relative_pixel():
    cams = from_fov(look_at(torch.tensor([3.0, 1.0, 1.0])), 50.0, 40, 30)
    small = cams.resized(20, 15)
    assert small.fx.item() == pytest.approx(cams.fx.item() / 2)
    _, big_dirs = generate_rays(cams)
    _, small_dirs = generate_rays(small)
    # Pixel (0, 0) of the small image covers pixels (0..1, 0..1) of the big one: its ray is their average.
    average = torch.nn.functional.normalize(big_dirs[0, :2, :2].reshape(-1, 3).mean(0), dim=0)
    assert torch.allclose(small_dirs[0, 0, 0], average, atol=1e-4)


def test_indexing_and_concatenation():
    cams = orbit([10.0, 20.0, 30.0], [0.0, 120.0, 240.0], 2.0, 40.0, 16, 16)
    assert len(cams) == 3 and len(cams[1]) == 1
    assert torch.equal(cams[[2, 0]].c2w, cams.c2w[[2, 0]])
    joined = Cameras.cat([cams[0], cams[1:]])
    assert torch.equal(joined.c2w, cams.c2w) and torch.equal(joined.fx, cams.fx)
    with pytest.raises(ValueError):
        Cameras.cat([cams, cams.resized(8, 8)])
    shared = Cameras(cams.c2w, torch.tensor([5.0]), 5.0, torch.tensor(8.0), [8.0], 16, 16)  # one value for all
    assert shared.fx.tolist() == [5.0] * 3 and shared.cy.tolist() == [8.0] * 3
