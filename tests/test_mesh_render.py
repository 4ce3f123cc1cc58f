"""The mesh renderer against analytic answers: ray-sphere intersection, barycentric colours, Lambert."""

import math

import numpy as np
import pytest
import torch
import trimesh

from gen3d.cameras import Cameras, generate_rays, look_at, orbit
from gen3d.export.metrics import mask_iou
from gen3d.render import ShadingConfig, render_mesh

SPHERE = trimesh.creation.icosphere(subdivisions=5, radius=1.0)


def _ray_sphere(cams: Cameras, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact hit mask and depth along the camera -z axis for a sphere at the origin."""
    origins, dirs = generate_rays(cams)
    origins, dirs = origins.double(), dirs.double()
    b = (origins * dirs).sum(-1)
    disc = b**2 - ((origins**2).sum(-1) - radius**2)
    hit = disc > 0
    t = -b - torch.sqrt(disc.clamp(min=0))
    forward = -cams.c2w[:, :3, 2].double()
    depth = t * (dirs * forward[:, None, None]).sum(-1)
    return hit, torch.where(hit, depth, torch.zeros_like(depth))


def _centred_camera(eye, size: int = 64, focal: float = 80.0) -> Cameras:
    """A camera whose central pixel (size // 2) is centred exactly on the optical axis."""
    c = size // 2 + 0.5
    return Cameras(look_at(torch.tensor(eye, dtype=torch.float32)), torch.tensor(focal), torch.tensor(focal),
                   torch.tensor(c), torch.tensor(c), size + 1, size + 1)


def test_sphere_mask_and_depth_match_ray_sphere_intersection():
    cams = orbit([15.0, 35.0, -20.0], [0.0, 100.0, 250.0], radius=3.0, fov_y_deg=40.0, width=64, height=64)
    out = render_mesh(SPHERE, cams)
    hit, depth = _ray_sphere(cams, 1.0)
    for i in range(len(cams)):
        assert mask_iou(out.mask[i], hit[i]) > 0.99
    both = out.mask & hit
    assert both.sum() > 3 * 500
    # The icosphere is inscribed in the analytic sphere: depths agree up to the tessellation error,
    # which grows towards the silhouette where rays graze the facets.
    error = (out.depth.double() - depth).abs()
    _, dirs = generate_rays(cams)
    facing = both & (-(out.normals * dirs).sum(-1) > 0.5)
    assert error[facing].max() < 1e-3 and error[both].median() < 5e-4
    assert torch.all(out.depth[~out.mask] == 0) and torch.all(out.face_ids[~out.mask] == -1)
    assert torch.all(out.rgba[..., 3][~out.mask] == 0)


def test_centre_pixel_depth_and_normal():
    eye = [2.0, -1.5, 1.2]
    cams = _centred_camera(eye)
    out = render_mesh(SPHERE, cams)
    distance = float(np.linalg.norm(eye))
    assert abs(float(out.depth[0, 32, 32]) - (distance - 1.0)) < 1e-3
    towards_camera = torch.tensor(eye) / distance
    assert float(out.normals[0, 32, 32] @ towards_camera) > 0.999


def test_normals_are_unit_and_face_the_camera_even_from_behind():
    plane = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]])  # normal +z
    below = _centred_camera([0.0, 0.3, -2.5])
    above = _centred_camera([0.0, 0.3, 2.5])
    for cams, expected_z in ((below, -1.0), (above, 1.0)):
        out = render_mesh(plane, cams)
        n = out.normals[out.mask]
        assert len(n) > 100
        assert torch.allclose(n, torch.tensor([0.0, 0.0, expected_z]).expand_as(n), atol=1e-6)


def test_vertex_colours_are_interpolated_exactly_when_unlit():
    verts = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    colours = np.array([[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [255, 255, 255, 255]], np.uint8)
    quad = trimesh.Trimesh(verts, faces, vertex_colors=colours, process=False)
    cams = orbit([60.0], [30.0], radius=3.0, fov_y_deg=50.0, width=48, height=40)
    out = render_mesh(quad, cams)
    origins, dirs = generate_rays(cams)
    origins, dirs = origins[out.mask].double().numpy(), dirs[out.mask].double().numpy()
    points = origins - (origins[:, 2] / dirs[:, 2])[:, None] * dirs  # exact ray / z=0 plane hits
    tri = verts[faces[out.face_ids[out.mask].numpy()]]
    bary = trimesh.triangles.points_to_barycentric(tri, points)
    expected = np.einsum("pk,pkc->pc", bary, colours[faces[out.face_ids[out.mask].numpy()], :3] / 255.0)
    assert len(expected) > 300
    np.testing.assert_allclose(out.rgba[..., :3][out.mask].numpy(), expected, atol=2e-5)


def test_uniform_and_face_colours_come_through_unchanged():
    red_sphere = SPHERE.copy()
    red_sphere.visual.vertex_colors = [200, 30, 60, 255]
    cams = orbit([20.0], [45.0], radius=3.0, fov_y_deg=40.0, width=32, height=32)
    out = render_mesh(red_sphere, cams)
    rgb = out.rgba[..., :3][out.mask]
    assert torch.allclose(rgb, torch.tensor([200, 30, 60]) / 255.0, atol=1e-6)

    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    face_colours = np.random.default_rng(0).integers(0, 256, size=(len(box.faces), 4), dtype=np.uint8)
    box.visual.face_colors = face_colours
    out = render_mesh(box, cams)
    ids = out.face_ids[out.mask].numpy()
    assert len(np.unique(ids)) >= 6  # three sides, two triangles each
    np.testing.assert_allclose(out.rgba[..., :3][out.mask].numpy(), face_colours[ids, :3] / 255.0, atol=1e-6)

    out = render_mesh(box, cams, color=(0.1, 0.2, 0.3))
    assert torch.allclose(out.rgba[..., :3][out.mask], torch.tensor([0.1, 0.2, 0.3]), atol=1e-6)


def _square_facing(normal: np.ndarray) -> trimesh.Trimesh:
    square = trimesh.Trimesh([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], [[0, 1, 2], [0, 2, 3]])
    square.apply_transform(trimesh.geometry.align_vectors([0, 0, 1], normal))
    square.visual.vertex_colors = [255, 255, 255, 255]
    return square


@pytest.mark.parametrize("ambient, diffuse", [(0.0, 1.0), (0.35, 0.65)])
def test_lambert_follows_the_cosine_to_the_light(ambient, diffuse):
    shading = ShadingConfig(ambient=ambient, diffuse=diffuse)
    light = np.asarray(shading.light_dir) / np.linalg.norm(shading.light_dir)
    side = np.cross(light, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    angle = math.radians(50.0)
    tilted = math.cos(angle) * light + math.sin(angle) * side
    cams = _centred_camera(list(3.0 * light))
    brightness = []
    for normal in (light, tilted):
        out = render_mesh(_square_facing(normal), cams, shading=shading)
        values = out.rgba[..., 0][out.mask]
        assert len(values) > 50 and float(values.max() - values.min()) < 1e-6  # flat shading
        brightness.append(float(values.mean()))
    assert brightness[0] == pytest.approx(ambient + diffuse, abs=1e-5)
    assert brightness[1] == pytest.approx(ambient + diffuse * math.cos(angle), abs=1e-5)


def test_supersampling_gives_fractional_coverage_with_the_disc_area():
    cams = _centred_camera([0.0, -3.0, 0.0], size=64, focal=60.0)
    hard = render_mesh(SPHERE, cams)
    soft = render_mesh(SPHERE, cams, ss=4)
    assert set(hard.rgba[..., 3].unique().tolist()) == {0.0, 1.0}
    alpha = soft.rgba[..., 3]
    edge = (alpha > 0) & (alpha < 1)
    assert edge.sum() > 50
    # Silhouette of a sphere of radius 1 seen from distance 3: a disc of radius f * tan(asin(1/3)) pixels.
    disc_area = math.pi * (60.0 * math.tan(math.asin(1 / 3))) ** 2
    assert float(alpha.sum()) == pytest.approx(disc_area, rel=0.01)
    assert mask_iou(soft.mask, hard.mask) > 0.97
    # Geometry buffers stay sampled at pixel centres.
    assert torch.equal(soft.depth, hard.depth) and torch.equal(soft.face_ids, hard.face_ids)


def test_rendering_is_deterministic_and_composites_onto_white():
    cams = orbit([15.0, 15.0], [0.0, 90.0], radius=2.5, fov_y_deg=40.0, width=32, height=32)
    a = render_mesh(SPHERE, cams, shading=ShadingConfig(), ss=2)
    b = render_mesh(SPHERE, cams, shading=ShadingConfig(), ss=2)
    assert torch.equal(a.rgba, b.rgba) and torch.equal(a.normals, b.normals)
    rgb = a.composited()
    assert torch.all(rgb[a.rgba[..., 3] == 0] == 1.0)
    empty = render_mesh(trimesh.Trimesh(), cams)
    assert float(empty.rgba.abs().sum()) == 0.0 and int(empty.face_ids.max()) == -1
