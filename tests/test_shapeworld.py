"""ShapeWorld: specs, captions, held-out split, meshes, renders and the training cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from gen3d.cameras import camera_directions, project
from gen3d.errors import UserError
from gen3d.shapeworld.captions import caption_is_held_out, captions_for, parse_caption
from gen3d.shapeworld.dataset import ShapeWorldDataset, build_cache, render_spec, to_uint8
from gen3d.shapeworld.scenes import (
    EVAL_ELEVATION_DEG, RADIUS, eval_cameras, sample_cameras, sample_scene, sample_spec,
)
from gen3d.shapeworld.shapes import build_mesh
from gen3d.shapeworld.spec import (
    COLOURS, HELD_OUT, SHAPES, SIZES, TOP_SHAPES, Part, SceneSpec, is_held_out, nearest_colour,
)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_scenes_are_deterministic_per_index_and_seed():
    first = [sample_scene(7, i, views=4, image_size=32, captions=3) for i in range(20)]
    again = [sample_scene(7, i, views=4, image_size=32, captions=3) for i in reversed(range(20))][::-1]
    for a, b in zip(first, again):
        assert a.spec == b.spec and a.captions == b.captions
        assert torch.equal(a.cameras.c2w, b.cameras.c2w)
    other = [sample_scene(8, i, views=4, image_size=32).spec for i in range(20)]
    assert sum(a.spec != b for a, b in zip(first, other)) >= 15
    assert len({s.spec for s in first}) >= 15


def test_renders_are_bit_identical_for_a_seed_and_differ_across_seeds():
    scene = sample_scene(3, 5, views=3, image_size=32)
    a = to_uint8(render_spec(scene.spec, scene.cameras).rgba)
    b = to_uint8(render_spec(scene.spec, scene.cameras).rgba)
    assert np.array_equal(a, b)
    other = sample_scene(4, 5, views=3, image_size=32)
    assert not np.array_equal(a, to_uint8(render_spec(other.spec, other.cameras).rgba))


def test_held_out_split_covers_vocabulary_and_never_leaks_into_training():
    assert {s for s, _ in HELD_OUT} == set(SHAPES) and {c for _, c in HELD_OUT} == set(COLOURS)
    rng = np.random.default_rng(0)
    train = [sample_spec(rng, "train") for _ in range(4000)]
    assert not any(is_held_out(s) for s in train)
    assert not any((p.shape, p.colour) in HELD_OUT for s in train for p in s.parts)
    # The training distribution still covers every allowed pair, both sizes and second parts.
    assert len({(s.shape, s.colour) for s in train}) == len(SHAPES) * len(COLOURS) - len(HELD_OUT)
    assert {s.size for s in train} == set(SIZES)
    assert 0.2 < np.mean([s.top is not None for s in train]) < 0.4
    held = [sample_spec(rng, "heldout") for _ in range(300)]
    assert all((s.shape, s.colour) in HELD_OUT for s in held)
    assert {(s.shape, s.colour) for s in held} == set(HELD_OUT)
    assert caption_is_held_out("a small blue mushroom") and not caption_is_held_out("a red cube")
    assert caption_is_held_out("a red cube with a purple sphere on top")


def test_every_phrasing_parses_back_to_its_spec():
    rng = np.random.default_rng(1)
    specs = [sample_spec(rng, split) for split in ("train", "heldout") for _ in range(150)]
    specs.append(SceneSpec("cone", "blue", "small", Part("sphere", "yellow")))
    for spec in specs:
        phrasings = captions_for(spec)
        assert len(set(phrasings)) == len(phrasings) >= 7
        for text in phrasings:
            parsed = parse_caption(text)
            assert (parsed.shape, parsed.colour, parsed.top) == (spec.shape, spec.colour, spec.top), text
            assert parsed.size == (spec.size if spec.size in text.split() else None), text
    phrasings = captions_for(SceneSpec("cube", "orange", "large", Part("cone", "orange")))
    assert "an orange cube with an orange cone on top" in phrasings
    assert "a cube that is orange, topped with an orange cone" in phrasings
    assert parse_caption("A small blue cone with a yellow sphere on top.") == \
        SceneSpec("cone", "blue", "small", Part("sphere", "yellow"))


@pytest.mark.parametrize("text", ["a dog", "a red blue cube", "a red cube with a sphere on top"])
def test_unparseable_captions_are_user_errors(text):
    with pytest.raises(UserError):
        parse_caption(text)


def test_meshes_are_canonical_and_fit_the_object_box():
    for shape in SHAPES:
        for size, scale in SIZES.items():
            mesh = build_mesh(SceneSpec(shape, "red", size))
            assert mesh.is_watertight and mesh.volume > 0, shape
            assert np.linalg.norm(mesh.vertices, axis=1).max() == pytest.approx(scale)
            assert np.abs(mesh.bounds).max() <= 0.8 + 1e-9
            np.testing.assert_allclose(mesh.bounds.sum(0), 0.0, atol=1e-9)  # box centred
    cone = build_mesh(SceneSpec("cone", "red", "large")).vertices
    apex = cone[cone[:, 2].argmax()]
    np.testing.assert_allclose(apex[:2], 0.0, atol=1e-9)  # upright: apex on the z axis, up
    cube = build_mesh(SceneSpec("cube", "red", "large")).vertices
    np.testing.assert_allclose(np.abs(cube), 0.8 / math.sqrt(3))  # axis-aligned faces


def test_second_part_sits_on_top_in_its_own_colour():
    mesh = build_mesh(SceneSpec("cube", "red", "large", Part("sphere", "blue")))
    colours = mesh.visual.face_colors[:, :3]
    red, blue = np.all(colours == (215, 40, 40), 1), np.all(colours == (40, 80, 220), 1)
    assert red.sum() == 12 and red.sum() + blue.sum() == len(mesh.faces)
    cube_z = mesh.vertices[mesh.faces[red]].reshape(-1, 3)[:, 2]
    sphere_z = mesh.vertices[mesh.faces[blue]].reshape(-1, 3)[:, 2]
    assert sphere_z.min() == pytest.approx(cube_z.max())
    assert np.linalg.norm(mesh.vertices, axis=1).max() == pytest.approx(0.8)


def test_cameras_follow_the_conventions():
    cams = sample_cameras(np.random.default_rng(0), 500, 64)
    centres = cams.centers
    np.testing.assert_allclose(centres.norm(dim=1), RADIUS, rtol=1e-5)
    elevation = torch.rad2deg(torch.asin(centres[:, 2] / RADIUS))
    assert 5 <= elevation.min() < 7 and 38 < elevation.max() <= 40
    assert torch.allclose(cams.fov_y, torch.tensor(math.radians(40.0)))
    ev = eval_cameras(64)
    assert len(ev) == 8
    expected = RADIUS * torch.tensor([math.cos(math.radians(EVAL_ELEVATION_DEG)), 0.0,
                                      math.sin(math.radians(EVAL_ELEVATION_DEG))])
    torch.testing.assert_close(ev.centers[0], expected)  # azimuth 0 is +x
    assert ev.centers[2, 1] > 2.0  # azimuth 90 is +y


def test_sphere_mask_is_the_analytic_disc():
    spec = SceneSpec("sphere", "green", "large")
    cams = sample_cameras(np.random.default_rng(2), 4, 64)
    alpha = render_spec(spec, cams, ss=1).rgba[..., 3].numpy() > 0.5
    d = camera_directions(cams)  # camera looks at the sphere's centre, so its outline is a disc
    angle = torch.atan(d[..., :2].norm(dim=-1)).numpy()
    disc = angle < math.asin(SIZES["large"] / RADIUS)
    for a, b in zip(alpha, disc):
        assert _iou(a, b) > 0.97


def _rasterised_silhouette(mesh, cams, index: int, factor: int = 8) -> np.ndarray:
    """Fill every projected triangle with PIL at `factor` x resolution, then majority-pool
    (PIL's fills include edge pixels, so a fine grid keeps that bias small)."""
    uv, _ = project(torch.tensor(mesh.vertices, dtype=torch.float32), cams)
    size = cams.width * factor
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    points = uv[index].numpy() * factor  # PIL's pixel (0, 0) is the square [0, 1)^2, like ours
    for tri in mesh.faces:
        draw.polygon([tuple(p) for p in points[tri]], fill=255)
    fine = np.asarray(image, dtype=np.float64) / 255.0
    return fine.reshape(cams.height, factor, cams.width, factor).mean(axis=(1, 3)) >= 0.5


@pytest.mark.parametrize("spec", [SceneSpec("cone", "blue", "small", Part("cube", "yellow")),
                                  SceneSpec("mushroom", "pink", "large"),
                                  SceneSpec("torus", "cyan", "large", Part("capsule", "red"))])
def test_masks_equal_the_projected_mesh(spec):
    cams = sample_cameras(np.random.default_rng(3), 3, 64)
    mesh = build_mesh(spec)
    alpha = render_spec(spec, cams, ss=1).rgba[..., 3].numpy() > 0.5
    for i in range(len(cams)):
        assert _iou(alpha[i], _rasterised_silhouette(mesh, cams, i)) > 0.97


def test_shaded_colours_stay_nearest_to_their_palette_entry():
    cams = sample_cameras(np.random.default_rng(4), 2, 48)
    for colour in COLOURS:
        rgba = render_spec(SceneSpec("capsule", colour, "large", Part("cube", colour)), cams).rgba
        pixels = rgba[..., :3][rgba[..., 3] == 1.0].numpy()
        assert len(pixels) > 500
        assert np.mean([c == colour for c in nearest_colour(pixels)]) > 0.99, colour


def test_cache_round_trip_and_dataset(tmp_path):
    index = build_cache(tmp_path / "c", n_scenes=5, views_per_scene=4, size=32, seed=11, shard_size=3)
    assert index["shards"] == ["shard-000000-000003.npz", "shard-000003-000005.npz"]
    assert build_cache(tmp_path / "c", n_scenes=5, views_per_scene=4, size=32, seed=11, shard_size=3) == index
    with pytest.raises(UserError):
        build_cache(tmp_path / "c", n_scenes=5, views_per_scene=4, size=32, seed=12)
    assert not list((tmp_path / "c").glob(".*"))  # no temporary files left behind

    ds = ShapeWorldDataset(tmp_path / "c", views=2, seed=0)
    assert len(ds) == 5
    for i in range(len(ds)):
        item = ds[i]
        scene = sample_scene(11, i, views=4, image_size=32, captions=4)
        assert item["spec"] == scene.spec.to_json() and item["caption"] in scene.captions
        assert item["rgba"].shape == (2, 4, 32, 32) and item["c2w"].shape == (2, 4, 4)
        fresh = to_uint8(render_spec(scene.spec, scene.cameras).rgba)
        views = [int(np.flatnonzero((scene.cameras.c2w == c).all(-1).all(-1))[0]) for c in item["c2w"]]
        np.testing.assert_array_equal(np.round(item["rgba"].permute(0, 2, 3, 1).numpy() * 255), fresh[views])
        parsed = parse_caption(item["caption"])
        assert SceneSpec.from_json(item["spec"]).shape == parsed.shape
    assert torch.equal(ds[3]["rgba"], ds[3]["rgba"])
    picks = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        picks.append(tuple(tuple(ds[i]["c2w"][:, 0, 3].tolist()) for i in range(len(ds))))
    assert len(set(picks)) > 1
    with pytest.raises(UserError):
        ShapeWorldDataset(tmp_path / "c", views=5)


def test_spec_json_round_trip_and_validation():
    spec = SceneSpec("snowman", "cyan", "small", Part("cone", "orange"))
    assert SceneSpec.from_json(spec.to_json()) == spec
    with pytest.raises(UserError, match="top.shape"):
        SceneSpec.from_json(SceneSpec("cube", "red", "small", Part("snowman", "red")).to_json())
    assert set(TOP_SHAPES) < set(SHAPES)
