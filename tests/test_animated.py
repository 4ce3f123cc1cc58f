"""Animated ShapeWorld: captions, motions over time, the held-out split and the animated cache."""

from __future__ import annotations

import numpy as np
import pytest

from gen3d.errors import UserError
from gen3d.render.mesh import render_mesh
from gen3d.shapeworld.animated import (
    BOUNCE_HEIGHT,
    GROW_RANGE,
    HEAD_TURN_DEG,
    MOTIONS,
    SLIDE_HALF_RANGE,
    AnimatedSpec,
    animated_captions,
    centre_at,
    mesh_at,
    motions_for,
    parse_animated_caption,
    sample_animated_scene,
    sample_animated_spec,
)
from gen3d.shapeworld.dataset import SHADING, ShapeWorldDataset, build_cache
from gen3d.shapeworld.spec import HELD_OUT, SHAPES, SceneSpec


def _anim(shape: str, motion: str, colour: str = "red", size: str = "large") -> AnimatedSpec:
    return AnimatedSpec(SceneSpec(shape, colour, size), motion)


def test_every_caption_parses_back_to_its_spec_and_motion():
    for shape in SHAPES:
        for motion in motions_for(shape):
            anim = _anim(shape, motion, "orange", "small")
            for caption in animated_captions(anim):
                parsed = parse_animated_caption(caption)
                assert parsed.motion == motion, caption
                assert (parsed.spec.shape, parsed.spec.colour) == (shape, "orange"), caption
                assert parsed.spec.size in ("small", None), caption


def test_bad_captions_and_motions_name_the_problem():
    with pytest.raises(UserError, match="names no ShapeWorld motion"):
        parse_animated_caption("a red sphere")
    with pytest.raises(UserError, match="needs a snowman"):
        parse_animated_caption("a red cube turning its head")
    assert motions_for("snowman") == MOTIONS and "turn" not in motions_for("cube")


def test_motions_follow_their_definitions():
    bounce = _anim("sphere", "bounce")
    lift = centre_at(bounce, 0.25) - centre_at(bounce, 0.0)
    assert np.allclose(lift, [0, 0, BOUNCE_HEIGHT], atol=1e-9)
    slide = _anim("capsule", "slide")
    assert np.isclose(centre_at(slide, 1.0)[0] - centre_at(slide, 0.0)[0], 2 * SLIDE_HALF_RANGE)
    grow = _anim("cone", "grow")
    extent = [np.ptp(np.asarray(mesh_at(grow, t).vertices), axis=0) for t in (0.0, 1.0)]
    assert np.allclose(extent[1] / extent[0], GROW_RANGE[1] / GROW_RANGE[0])
    shrink = _anim("cone", "shrink")
    assert np.allclose(mesh_at(shrink, 0.0).vertices, mesh_at(grow, 1.0).vertices)
    # A spinning cube at t = 0.5 has turned 45 degrees: its footprint's diagonal is now along x.
    spin = _anim("cube", "spin")
    width = [np.ptp(np.asarray(mesh_at(spin, t).vertices)[:, 0]) for t in (0.0, 0.5)]
    assert np.isclose(width[1] / width[0], np.sqrt(2), rtol=1e-6)


def test_the_snowman_turns_only_its_head():
    turn = _anim("snowman", "turn", "orange")
    start, end = (np.asarray(mesh_at(turn, t).vertices) for t in (0.0, 1.0))
    moved = np.linalg.norm(end - start, axis=1) > 1e-9
    assert 0 < moved.sum() < 0.2 * len(moved)  # the nose, not the body
    # The nose swings from -60 to +60 degrees of azimuth about the head's (vertical) axis.
    angles = [np.degrees(np.arctan2(*nose[moved][:, 1::-1].mean(0))) for nose in (start, end)]
    assert np.allclose(angles, HEAD_TURN_DEG, atol=1e-6)
    colours = {tuple(c[:3]) for c in mesh_at(turn, 0.5).visual.face_colors}
    assert len(colours) == 2  # body orange, nose red


def test_every_object_stays_in_bounds_at_every_time():
    for shape in SHAPES:
        for motion in motions_for(shape):
            for t in np.linspace(0, 1, 9):
                vertices = np.asarray(mesh_at(_anim(shape, motion), float(t)).vertices)
                assert np.abs(vertices).max() <= 0.8, (shape, motion, t)


def test_split_and_scenes_are_deterministic():
    rng = np.random.default_rng(0)
    train = [sample_animated_spec(rng, "train") for _ in range(2000)]
    assert not any((a.spec.shape, a.spec.colour) in HELD_OUT for a in train)
    assert {a.motion for a in train} == set(MOTIONS)
    held = [sample_animated_spec(rng, "heldout") for _ in range(100)]
    assert all((a.spec.shape, a.spec.colour) in HELD_OUT for a in held)
    a, b = (sample_animated_scene(5, 3, cameras=2, times=3, image_size=16) for _ in range(2))
    assert a.anim == b.anim and a.captions == b.captions and np.array_equal(a.times, b.times)
    assert a.times[0] == 0.0 and a.times[-1] == 1.0


def test_animated_cache_stores_a_camera_by_time_grid(tmp_path):
    build_cache(tmp_path / "c", 3, views_per_scene=2, size=16, times_per_scene=3, shard_size=2, ss=1)
    data = ShapeWorldDataset(tmp_path / "c", views=6)
    assert data.rgba.shape == (3, 6, 16, 16, 4)
    scene = sample_animated_scene(0, 1, cameras=2, times=3, image_size=16)
    assert np.allclose(data.times[1], np.repeat(scene.times, 2))
    assert np.allclose(data.c2w[1, :2], data.c2w[1, 4:])  # the same cameras at every time
    # Each stored view is the ground truth at its own time.
    truth = render_mesh(mesh_at(scene.anim, float(scene.times[2])), scene.cameras, shading=SHADING, ss=1).rgba
    assert np.abs(data.rgba[1, 4:].astype(float) / 255 - truth.numpy()).max() < 1 / 255 + 1e-6


def test_an_unfinished_cache_keeps_its_finished_shards(tmp_path):
    folder = tmp_path / "c"
    build_cache(folder, 4, views_per_scene=2, size=16, times_per_scene=2, shard_size=2, ss=1)
    (folder / "index.json").unlink()  # as if interrupted after its shards
    first = folder / "shard-000000-000002.npz"
    stamp = first.stat().st_mtime_ns
    build_cache(folder, 6, views_per_scene=2, size=16, times_per_scene=2, shard_size=2, ss=1)
    assert first.stat().st_mtime_ns == stamp  # reused, not rendered again
    assert len(ShapeWorldDataset(folder, views=4)) == 6
