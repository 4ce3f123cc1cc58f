"""Export: marching cubes, cleaning, file formats and axes, turntable videos, metrics."""

import json
import struct

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh

from gen3d.errors import UserError
from gen3d.export import (
    chamfer_distance,
    clean_mesh,
    extract_mesh,
    mask_iou,
    mesh_report,
    render_turntable,
    write_gif,
    write_glb,
    write_mesh,
    write_obj,
    write_ply,
    write_pointcloud_ply,
    write_textured_glb,
    write_video,
)
from gen3d.io import atomic_output

BOX = [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]
RADIUS = 0.6


def sphere_density(points: torch.Tensor) -> torch.Tensor:
    """Density 1 at the centre falling linearly, crossing 0.5 at radius RADIUS."""
    return 1.0 - 0.5 * points.norm(dim=-1) / RADIUS


def position_colour(points: torch.Tensor) -> torch.Tensor:
    return (points * 0.5 + 0.5).clamp(0, 1)


@pytest.fixture(scope="module")
def sphere_mesh() -> trimesh.Trimesh:
    return extract_mesh(sphere_density, BOX, resolution=48, threshold=0.5, color_fn=position_colour)


def upright_cone() -> trimesh.Trimesh:
    cone = trimesh.creation.cone(radius=0.4, height=1.0)  # base at z=0, apex at z=+1
    cone.visual.vertex_colors = [220, 120, 30, 255]
    return cone


# --- marching cubes -------------------------------------------------------------------------------

def test_marching_cubes_of_a_sphere_is_one_closed_outward_surface(sphere_mesh):
    report = mesh_report(sphere_mesh)
    assert report["components"] == 1 and report["watertight"] and report["winding_consistent"]
    assert report["outward"] and report["volume"] == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.02)
    # Vertex normals point away from the centre.
    radial = sphere_mesh.vertices / np.linalg.norm(sphere_mesh.vertices, axis=1, keepdims=True)
    assert np.min(np.einsum("vc,vc->v", sphere_mesh.vertex_normals, radial)) > 0.9
    np.testing.assert_allclose(np.linalg.norm(sphere_mesh.vertices, axis=1), RADIUS, atol=0.01)
    gt = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)
    # 100k samples: at the default 10k the sampling itself contributes ~0.018 (see metrics docs).
    assert chamfer_distance(sphere_mesh, gt, n=100_000) < 0.01


def test_marching_cubes_colours_chunks_and_closes_at_the_box():
    calls = []

    def counted(points):
        calls.append(len(points))
        return sphere_density(points)

    mesh = extract_mesh(counted, BOX, resolution=20, threshold=0.5, color_fn=position_colour, chunk=1000)
    assert max(calls) <= 1000 and sum(calls) == 20**3
    expected = np.round(np.clip(mesh.vertices * 0.5 + 0.5, 0, 1) * 255)
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3], expected, atol=1)
    # A sphere bigger than the box is cut by the box walls, yet the surface stays closed.
    big = extract_mesh(lambda p: 2.0 - p.norm(dim=-1), [[-0.5] * 3, [0.5] * 3], resolution=16, threshold=1.0)
    assert mesh_report(big)["watertight"] and mesh_report(big)["outward"]
    assert big.volume == pytest.approx(1.0, rel=0.15)


def test_marching_cubes_rejects_a_threshold_without_surface():
    with pytest.raises(UserError, match="threshold 5.0"):
        extract_mesh(sphere_density, BOX, resolution=8, threshold=5.0)


# --- cleaning -------------------------------------------------------------------------------------

def _with_floater(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    floater = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    floater.apply_translation([0.85, 0.85, 0.85])
    floater.visual.vertex_colors = [0, 0, 0, 255]
    return trimesh.util.concatenate([mesh, floater])


def test_cleaning_removes_a_floater_and_keeps_colours(sphere_mesh):
    noisy = _with_floater(sphere_mesh)
    assert mesh_report(noisy)["components"] == 2
    cleaned = clean_mesh(noisy)
    report = mesh_report(cleaned)
    assert report["components"] == 1 and report["watertight"] and report["outward"]
    assert np.linalg.norm(cleaned.vertices, axis=1).max() < RADIUS + 0.01
    assert cleaned.visual.kind == "vertex" and len(cleaned.vertices) == len(sphere_mesh.vertices)
    # keep_largest=False keeps parts above the area fraction only.
    assert mesh_report(clean_mesh(noisy, keep_largest=False, min_component_fraction=0.001))["components"] == 2
    assert mesh_report(clean_mesh(noisy, keep_largest=False, min_component_fraction=0.05))["components"] == 1


def test_cleaning_fills_holes_fixes_inversion_and_decimates(sphere_mesh):
    holed = sphere_mesh.copy()
    keep = np.ones(len(holed.faces), bool)
    keep[[10, 11, 500]] = False  # two small holes
    holed.update_faces(keep)
    holed.invert()
    assert not mesh_report(holed)["watertight"]
    cleaned = clean_mesh(holed, target_faces=1000)
    report = mesh_report(cleaned)
    assert report["watertight"] and report["outward"] and report["winding_consistent"]
    assert 900 <= report["faces"] <= 1000
    assert chamfer_distance(cleaned, sphere_mesh) < 0.03
    # Decimated vertex colours are averages of neighbours: still close to the colour field.
    expected = np.clip(cleaned.vertices * 0.5 + 0.5, 0, 1) * 255
    assert np.abs(cleaned.visual.vertex_colors[:, :3] - expected).mean() < 4
    again = clean_mesh(holed, target_faces=1000)
    assert np.array_equal(again.vertices, cleaned.vertices) and np.array_equal(again.faces, cleaned.faces)


# --- writers --------------------------------------------------------------------------------------

def _glb_positions(path) -> tuple[dict, np.ndarray]:
    """The raw glTF JSON and the first primitive's POSITION array, read without trimesh."""
    data = path.read_bytes()
    magic, _, _ = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF"
    json_len, _ = struct.unpack_from("<I4s", data, 12)
    gltf = json.loads(data[20:20 + json_len])
    bin_start = 20 + json_len + 8
    accessor = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    view = gltf["bufferViews"][accessor["bufferView"]]
    offset = bin_start + view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    positions = np.frombuffer(data, dtype="<f4", count=3 * accessor["count"], offset=offset).reshape(-1, 3)
    return gltf, positions


def test_glb_turns_z_up_into_y_up(tmp_path):
    path = write_glb(upright_cone(), tmp_path / "cone.glb")
    gltf, positions = _glb_positions(path)
    for node in gltf.get("nodes", []):  # no node transform may undo or redo the rotation
        assert np.allclose(node.get("matrix", np.eye(4).ravel()), np.eye(4).ravel())
        assert "rotation" not in node or np.allclose(node["rotation"], [0, 0, 0, 1])
    apex = positions[np.argmax(positions[:, 1])]
    np.testing.assert_allclose(apex, [0.0, 1.0, 0.0], atol=1e-6)
    assert positions[:, 1].min() == pytest.approx(0.0, abs=1e-6)
    assert "COLOR_0" in gltf["meshes"][0]["primitives"][0]["attributes"]
    loaded = trimesh.load(path, force="mesh")
    np.testing.assert_allclose(loaded.vertices[np.argmax(loaded.vertices[:, 1])], [0.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(np.unique(loaded.visual.vertex_colors[:, :3], axis=0), [[220, 120, 30]])


def test_textured_glb_bakes_the_vertex_colours(tmp_path, sphere_mesh):
    pytest.importorskip("xatlas")
    path = write_textured_glb(sphere_mesh, tmp_path / "textured.glb", texture_size=256)
    loaded = trimesh.load(path, force="mesh")
    assert loaded.visual.kind == "texture"
    assert all(256 <= side <= 512 for side in loaded.visual.material.baseColorTexture.size)
    world = np.c_[loaded.vertices[:, 0], -loaded.vertices[:, 2], loaded.vertices[:, 1]]  # glTF y up -> z up
    np.testing.assert_allclose(np.linalg.norm(world, axis=1), RADIUS, atol=0.01)
    # xatlas leaves slivers it deems degenerate (area ~1e-8 here, invisible) at uv (0, 0): skip those.
    uncharted = (loaded.visual.uv == 0).all(axis=1)
    assert uncharted.sum() < 0.05 * len(uncharted)
    # The texture sampled at each vertex's UV gives back that vertex's colour.
    sampled = loaded.visual.to_color().vertex_colors[:, :3].astype(int)
    error = np.abs(sampled - np.round(np.clip(world * 0.5 + 0.5, 0, 1) * 255))[~uncharted]
    assert error.mean() < 1.0 and error.max() <= 16  # a chart corner may read its neighbour texel


@pytest.mark.parametrize("suffix, writer", [(".ply", write_ply), (".obj", write_obj)])
def test_ply_and_obj_keep_z_up_and_colours(tmp_path, suffix, writer):
    cone = upright_cone()
    path = writer(cone, tmp_path / f"cone{suffix}")
    loaded = trimesh.load(path, force="mesh", process=False)
    np.testing.assert_allclose(loaded.vertices[np.argmax(loaded.vertices[:, 2])], [0.0, 0.0, 1.0], atol=1e-6)
    assert loaded.bounds == pytest.approx(cone.bounds, abs=1e-6)
    assert len(loaded.faces) == len(cone.faces)
    np.testing.assert_array_equal(np.unique(loaded.visual.vertex_colors[:, :3], axis=0), [[220, 120, 30]])
    assert write_mesh(cone, tmp_path / f"again{suffix}").read_bytes() == path.read_bytes()


def test_pointcloud_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    points, colours = rng.normal(size=(500, 3)), rng.random((500, 3))
    cloud = trimesh.load(write_pointcloud_ply(points, colours, tmp_path / "cloud.ply"))
    np.testing.assert_allclose(cloud.vertices, points, atol=1e-12)
    np.testing.assert_array_equal(cloud.colors[:, :3], np.round(colours * 255))


def test_writes_are_atomic_and_formats_checked(tmp_path):
    target = tmp_path / "mesh.glb"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["mesh.glb"]
    with pytest.raises(UserError, match="mesh.stl"):
        write_mesh(upright_cone(), tmp_path / "mesh.stl")


# --- turntables -----------------------------------------------------------------------------------

def test_turntable_video_and_gif_read_back(tmp_path):
    frames = render_turntable(upright_cone(), n_frames=6, size=33, elevation=20.0)
    assert frames.shape == (6, 33, 33, 3) and frames.dtype == np.uint8
    assert (frames[:, 0, 0] == 255).all() and (frames.reshape(6, -1, 3) != 255).any(axis=(1, 2)).all()
    mp4 = write_video(frames, tmp_path / "turn.mp4", fps=6)
    decoded = np.stack(list(iio.imiter(mp4, plugin="FFMPEG")))
    assert decoded.shape == (6, 34, 34, 3)  # padded to even sizes for yuv420p
    assert np.abs(decoded[:, :33, :33].astype(int) - frames).mean() < 4
    assert write_video(frames, tmp_path / "again.mp4", fps=6).read_bytes() == mp4.read_bytes()
    gif = iio.imread(write_gif(frames, tmp_path / "turn.gif"), index=None)
    assert gif.shape[:3] == (6, 33, 33)
    assert np.abs(gif[..., :3].astype(int) - frames).mean() < 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.mp4", "turn.gif", "turn.mp4"]


# --- metrics --------------------------------------------------------------------------------------

def test_chamfer_is_zero_for_identical_meshes_scale_free_and_grows_with_offset():
    sphere = trimesh.creation.icosphere(subdivisions=4)
    assert chamfer_distance(sphere, sphere) == 0.0
    shifted = sphere.copy().apply_translation([0.2, 0.0, 0.0])
    # Unit spheres offset by d: the mean surface-to-surface distance is d / 2.
    value = chamfer_distance(shifted, sphere)
    assert value == pytest.approx(0.1, rel=0.06)
    scaled = [m.copy().apply_scale(10.0) for m in (shifted, sphere)]
    assert chamfer_distance(*scaled) == pytest.approx(value, rel=1e-9)


def test_mesh_report_and_mask_iou():
    report = mesh_report(trimesh.creation.box())
    assert report == {"vertices": 8, "faces": 12, "components": 1, "watertight": True,
                      "winding_consistent": True, "outward": True, "volume": pytest.approx(1.0)}
    open_box = trimesh.creation.box()
    open_box.update_faces(np.arange(10))
    assert mesh_report(open_box)["watertight"] is False and mesh_report(open_box)["outward"] is False
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4))
    b[1:3] = 0.9
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(torch.zeros(3, 3), torch.zeros(3, 3)) == 1.0
