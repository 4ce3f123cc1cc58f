"""Scene readers (nerfstudio / instant-ngp, Blender, LLFF), view selection and the nerfstudio writer."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen3d.cameras import look_at, orbit, project, unproject
from gen3d.data import load_scene, select_views, write_nerfstudio
from gen3d.data import writer as writer_module
from gen3d.errors import UserError
from gen3d.settings import data_dir

LEGO = data_dir(required=False) / "nerf_synthetic_lego_subset"
FERN = data_dir(required=False) / "llff_fern_lowres"
needs_lego = pytest.mark.shared_data("nerf_synthetic_lego_subset")
needs_fern = pytest.mark.shared_data("llff_fern_lowres")

W, H = 8, 6


# ---------------------------------------------------------------- synthetic scene folders


def _save_images(folder: Path, names: list[str], channels: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = [rng.integers(0, 256, size=(H, W, channels)).astype(np.uint8) for _ in names]
    for name, image in zip(names, pixels):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / name)
    return pixels


def _orbit_c2w(n: int) -> torch.Tensor:
    return orbit(torch.linspace(10, 50, n), torch.linspace(0, 300, n), 3.0, 40.0, W, H).c2w


def _nerfstudio(root: Path, n: int = 10, channels: int = 3, **meta) -> tuple[dict, list[np.ndarray]]:
    names = [f"images/frame_{i:03d}.png" for i in range(n)]
    pixels = _save_images(root, names, channels)
    frames = [{"file_path": name, "transform_matrix": c2w.tolist()} for name, c2w in zip(names, _orbit_c2w(n))]
    intrinsics = {"fl_x": 7.0, "fl_y": 7.5, "cx": 4.25, "cy": 2.75, "w": W, "h": H}
    meta = {"camera_model": "OPENCV", **intrinsics, "frames": frames, **meta}
    (root / "transforms.json").write_text(json.dumps(meta))
    return meta, pixels


def _rewrite(root: Path, meta: dict) -> None:
    (root / "transforms.json").write_text(json.dumps(meta))


def _llff(root: Path, n: int = 10, folder: str = "images_8") -> np.ndarray:
    """LLFF rows built from OpenGL cameras: rotation columns [right, up, back] stored as [down, right, back]."""
    c2w = look_at(torch.stack([torch.linspace(-1, 1, n), torch.zeros(n), torch.full((n,), 4.0)], -1), torch.zeros(3))
    c2w = c2w.double().numpy()
    rows = []
    for m in c2w:
        pose = np.stack([-m[:3, 1], m[:3, 0], m[:3, 2], m[:3, 3], [8 * H, 8 * W, 50.0]], axis=1)
        rows.append(np.concatenate([pose.reshape(-1), [2.0, 9.0]]))
    np.save(root / "poses_bounds.npy", np.stack(rows))
    _save_images(root, [f"{folder}/img{i:02d}.png" for i in range(n)])
    return c2w


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def lego():
    return load_scene(LEGO, downscale=8)


@needs_lego
def test_lego_blender_reader(lego):
    assert lego.format == "blender" and lego.scene_type == "bounded"
    assert (len(lego.train), len(lego.test)) == (30, 10)
    assert lego.train.images.shape == (30, 100, 100, 3) and lego.train.alpha.shape == (30, 100, 100, 1)
    assert lego.train.names[:2] == ["train/r_0.png", "train/r_1.png"] and lego.test.names[1] == "test/r_20.png"
    assert torch.allclose(lego.train.cameras.fx, torch.full((30,), 138.8889), atol=1e-3)
    assert lego.train.cameras.cx[0].item() == pytest.approx(50.0)
    assert (lego.near, lego.far) == (2.0, 6.0)
    assert torch.equal(lego.aabb, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    # Cameras look at the origin; the transparent corners are composited onto white.
    pixels, depth = project(torch.zeros(1, 3), lego.train.cameras)
    assert torch.allclose(pixels[:, 0], torch.full((30, 2), 50.0), atol=0.5)
    assert torch.allclose(depth[:, 0], torch.full((30,), 4.031), atol=0.01)
    assert torch.equal(lego.train.images[:, 0, 0], torch.ones(30, 3))
    assert torch.equal(lego.train.alpha[:, 0, 0], torch.zeros(30, 1))
    assert 0.05 < lego.train.alpha.mean() < 0.5


@needs_lego
def test_lego_views_are_farthest_point_picks(lego):
    picked = select_views(lego.train.cameras.centers, 3)
    assert picked[0] == 0
    scene = load_scene(LEGO, downscale=8, views=3)
    assert scene.train.names == [lego.train.names[i] for i in sorted(picked)]
    assert torch.equal(scene.train.images, lego.train.images[sorted(picked)])
    assert len(scene.test) == 10


@needs_lego
def test_lego_round_trip_through_nerfstudio_writer(lego, tmp_path):
    out = write_nerfstudio(lego, tmp_path / "lego_ns")
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and (meta["w"], meta["h"]) == (100, 100)
    assert meta["fl_x"] == pytest.approx(138.8889, abs=1e-3) and len(meta["frames"]) == 40
    back = load_scene(out)
    assert back.format == "nerfstudio"
    for before, after in ((lego.train, back.train), (lego.test, back.test)):
        assert after.names == before.names
        assert torch.equal(after.cameras.c2w, before.cameras.c2w) and torch.equal(after.cameras.fx, before.cameras.fx)
        # 8-bit PNGs: straight colour and alpha each quantised to 1/255.
        assert (after.alpha - before.alpha).abs().max() <= 0.5 / 255 + 1e-6
        assert (after.images - before.images).abs().max() <= 1.0 / 255 + 1e-6
    assert (back.near, back.far, back.scene_type) == (lego.near, lego.far, lego.scene_type)
    assert torch.equal(back.aabb, lego.aabb)


@pytest.fixture(scope="module")
def fern():
    return load_scene(FERN)


@needs_fern
def test_fern_llff_reader(fern):
    assert fern.format == "llff" and fern.scene_type == "forward_facing"
    assert (len(fern.train), len(fern.test)) == (17, 3)
    assert fern.test.names == ["images_8/image000.png", "images_8/image008.png", "images_8/image016.png"]
    assert fern.train.images.shape == (17, 378, 504, 3) and fern.train.alpha is None
    # Focal 3260.53 px at 4032 wide, rescaled to the 504 px found on disk.
    assert torch.allclose(fern.train.cameras.fx, torch.full((17,), 3260.526 / 8), atol=1e-2)
    assert fern.train.cameras.cx[0].item() == pytest.approx(252.0)
    # [down, right, back] -> OpenGL, recentred: every camera looks roughly down world -z.
    views = -torch.cat([fern.train.cameras.c2w, fern.test.cameras.c2w])[:, :3, 2]
    assert (views @ torch.tensor([0.0, 0.0, -1.0]) > math.cos(math.radians(15))).all()
    assert fern.near == pytest.approx(1 / 0.75) and fern.far == pytest.approx(80.0021 / 16.98530 / 0.75, rel=1e-4)
    # The box spans the frusta from the near to the far bound, in front of the cameras (z < 0).
    cams = fern.train.cameras
    centre_pixel = torch.stack([cams.cx[:1], cams.cy[:1]], -1)
    for depth in (fern.near, fern.far):
        points = unproject(centre_pixel, depth, cams)[:, 0]
        assert (points >= fern.aabb[0]).all() and (points <= fern.aabb[1]).all()
    assert fern.aabb[1, 2] < 0 and fern.aabb[0, 2] < -0.9 * fern.far


@needs_fern
def test_fern_downscale_picks_matching_folder_and_refuses_missing_one():
    scene = load_scene(FERN, downscale=16, views=3)
    assert scene.train.names[0] == "images_16/IMG_4027.png" and len(scene.train) == 3
    assert scene.train.images.shape[1:] == (189, 252, 3)
    assert scene.train.cameras.fx[0].item() == pytest.approx(3260.526 / 16, abs=1e-2)
    again = load_scene(FERN, downscale=16, views=3)
    assert again.train.names == scene.train.names and torch.equal(again.train.images, scene.train.images)
    with pytest.raises(UserError, match=r"images_4/ or images/.*found: images_16, images_8"):
        load_scene(FERN, downscale=4)


# ---------------------------------------------------------------- nerfstudio / instant-ngp, synthetic


def test_nerfstudio_global_intrinsics_and_holdout(tmp_path):
    meta, pixels = _nerfstudio(tmp_path)
    scene = load_scene(tmp_path)
    assert scene.format == "nerfstudio" and scene.scene_type == "unbounded"
    assert scene.test.names == ["images/frame_000.png", "images/frame_008.png"] and len(scene.train) == 8
    assert torch.equal(scene.train.images[0], torch.from_numpy(pixels[1]).float() / 255)
    c2w = _orbit_c2w(10)
    assert torch.equal(scene.train.cameras.c2w, c2w[[1, 2, 3, 4, 5, 6, 7, 9]])
    cams = scene.train.cameras
    assert (cams.fx[0].item(), cams.fy[0].item(), cams.cx[0].item(), cams.cy[0].item()) == (7.0, 7.5, 4.25, 2.75)
    assert (cams.width, cams.height) == (W, H)
    centres = c2w[:, :3, 3]
    assert (centres >= scene.aabb[0] - 1e-6).all() and (centres <= scene.aabb[1] + 1e-6).all()
    assert 0 < scene.near < scene.far
    everything = load_scene(tmp_path, split="none")
    assert everything.test is None and len(everything.train) == 10


def test_nerfstudio_object_capture_with_alpha_is_a_bounded_box_the_cameras_look_at(tmp_path):
    """RGBA frames (an object with its mask) in a plain nerfstudio file: the object's box, not an
    unbounded scene around the cameras (which trained 100 times slower than the same Blender scene)."""
    _nerfstudio(tmp_path, channels=4)
    scene = load_scene(tmp_path)
    assert scene.format == "nerfstudio" and scene.scene_type == "bounded" and scene.train.alpha is not None
    middle, half = scene.aabb.mean(0), (scene.aabb[1] - scene.aabb[0]) / 2
    assert middle.abs().max() < 1e-4  # the orbit looks at the origin
    assert half.tolist() == pytest.approx([1.25 * 3.0 * W / (2 * 7.0)] * 3, rel=1e-5)  # widest view at radius 3
    centres = _orbit_c2w(10)[:, :3, 3]
    assert (centres.norm(dim=-1) > half[0]).all()  # outside the ball the box holds
    assert 0 < scene.near < scene.far and scene.far > 3.0


def test_per_frame_intrinsics_override_global(tmp_path):
    meta, _ = _nerfstudio(tmp_path, n=3)
    meta["frames"][2].update({"fl_x": 9.0, "cx": 3.0})
    _rewrite(tmp_path, meta)
    cams = load_scene(tmp_path, split="none").train.cameras
    assert cams.fx.tolist() == [7.0, 7.0, 9.0] and cams.cx.tolist() == [4.25, 4.25, 3.0]
    assert cams.fy.tolist() == [7.5] * 3


def test_instant_ngp_conventions(tmp_path):
    meta, _ = _nerfstudio(tmp_path, n=3)
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_model"):
        del meta[key]
    for frame in meta["frames"]:
        frame["file_path"] = frame["file_path"][: -len(".png")]  # instant-ngp: no extension means PNG
    meta.update({"camera_angle_x": 1.0, "aabb_scale": 4, "offset": [0.5, 0.5, 0.8]})
    _rewrite(tmp_path, meta)
    scene = load_scene(tmp_path, split="none")
    assert scene.format == "instant-ngp" and scene.scene_type == "unbounded"
    focal = 0.5 * W / math.tan(0.5)
    cams = scene.train.cameras
    assert cams.fx[0].item() == pytest.approx(focal) and cams.fy[0].item() == pytest.approx(focal)
    assert cams.cy[0].item() == H / 2 and scene.train.names[0] == "images/frame_000.png"
    # ngp axes (x, y, z) are world (y, z, x): the z offset of 0.8 moves the world box along -x.
    centre, half = (0.5 - 0.8) / 0.33, 0.5 * 4 / 0.33
    expected = torch.tensor([[centre - half, -half, -half], [centre + half, half, half]])
    assert torch.allclose(scene.aabb, expected, atol=1e-5)


def test_explicit_split_lists_are_honoured(tmp_path):
    meta, _ = _nerfstudio(tmp_path, n=4, train_filenames=["images/frame_001.png", "./images/frame_003.png"])
    meta["test_filenames"] = ["images/frame_002.png"]
    _rewrite(tmp_path, meta)
    scene = load_scene(tmp_path)
    assert scene.train.names == ["images/frame_001.png", "images/frame_003.png"]
    assert scene.test.names == ["images/frame_002.png"]


def test_distortion_is_ignored_with_a_warning(tmp_path):
    _nerfstudio(tmp_path, n=2, k1=0.1, p2=0.01)
    with pytest.warns(UserWarning, match=r"transforms.json: lens distortion \(k1, p2\) ignored"):
        scene = load_scene(tmp_path, split="none")
    assert len(scene.train) == 2


def test_downscale_uses_prepared_copies_or_averages_blocks(tmp_path):
    meta, pixels = _nerfstudio(tmp_path, n=2)
    scene = load_scene(tmp_path, split="none", downscale=2)
    block_means = torch.from_numpy(pixels[0]).float().div(255).reshape(3, 2, 4, 2, 3).mean(dim=(1, 3))
    assert torch.allclose(scene.train.images[0], block_means, atol=1e-6)
    assert scene.train.cameras.fx[0].item() == 3.5 and scene.train.cameras.cx[0].item() == 2.125
    small = [np.full((3, 4, 3), 40 * (i + 1), dtype=np.uint8) for i in range(2)]
    for i, image in enumerate(small):
        (tmp_path / "images_2").mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / "images_2" / f"frame_{i:03d}.png")
    prepared = load_scene(tmp_path, split="none", downscale=2)
    assert prepared.train.names == ["images_2/frame_000.png", "images_2/frame_001.png"]
    assert torch.equal(prepared.train.images[1], torch.full((3, 4, 3), 80 / 255))
    assert prepared.train.cameras.fx[0].item() == 3.5


def test_size_resizes_images_and_scales_intrinsics(tmp_path):
    _nerfstudio(tmp_path, n=2)
    scene = load_scene(tmp_path, split="none", size=(4, 2))
    assert scene.train.images.shape == (2, 2, 4, 3)
    cams = scene.train.cameras
    assert (cams.fx[0].item(), cams.fy[0].item()) == (3.5, 2.5) and cams.cy[0].item() == pytest.approx(2.75 / 3)


# ---------------------------------------------------------------- Blender and LLFF, synthetic


def test_blender_rgba_composited_onto_chosen_background(tmp_path):
    frames = []
    for split in ("train", "test"):
        names = [f"{split}/r_{i}.png" for i in range(2)]
        pixels = _save_images(tmp_path, names, channels=4, seed=len(split))
        c2w = _orbit_c2w(2)
        frames = [{"file_path": f"./{split}/r_{i}", "transform_matrix": c2w[i].tolist()} for i in range(2)]
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    scene = load_scene(tmp_path, background=(0.0, 0.0, 0.0))
    assert scene.format == "blender" and scene.background == (0.0, 0.0, 0.0)
    straight = torch.from_numpy(pixels[1]).float() / 255
    assert torch.equal(scene.test.images[1], straight[..., :3] * straight[..., 3:])
    assert torch.equal(scene.test.alpha[1], straight[..., 3:])
    white = load_scene(tmp_path, split="none")
    assert white.test is None
    assert torch.allclose(white.train.images - scene.train.images, 1 - scene.train.alpha, atol=1e-6)


def test_llff_pose_conversion_scale_and_focal(tmp_path):
    original = _llff(tmp_path)
    scene = load_scene(tmp_path, split="none")
    cams = scene.train.cameras
    assert scene.train.images.shape == (10, H, W, 3) and cams.fx[0].item() == pytest.approx(50.0 / 8)
    assert cams.cx[0].item() == W / 2
    # A similarity transform: relative rotations are kept, distances shrink by 1 / (0.75 * nearest bound).
    new = cams.c2w.double()
    for i, j in ((0, 5), (2, 9)):
        rel_old = np.linalg.inv(original[i]) @ original[j]
        rel_new = (torch.linalg.inv(new[i]) @ new[j]).numpy()
        assert np.allclose(rel_new[:3, :3], rel_old[:3, :3], atol=1e-5)
        assert np.allclose(rel_new[:3, 3], rel_old[:3, 3] / (0.75 * 2.0), atol=1e-5)
    assert torch.allclose(cams.centers.mean(0), torch.zeros(3), atol=1e-5)  # recentred
    assert (scene.near, scene.far) == (pytest.approx(1 / 0.75), pytest.approx(9.0 / 2.0 / 0.75))


# ---------------------------------------------------------------- writer


def test_exact_round_trip_without_resampling(tmp_path):
    _nerfstudio(tmp_path / "src", n=9, channels=4)
    scene = load_scene(tmp_path / "src", background=(0.2, 0.4, 0.6))
    scene.train.cameras.fx[3] = 6.0  # per-frame intrinsics get written per frame
    back = load_scene(write_nerfstudio(scene, tmp_path / "out"), background=(0.2, 0.4, 0.6))
    for before, after in ((scene.train, back.train), (scene.test, back.test)):
        assert after.names == before.names
        assert torch.equal(after.images, before.images) and torch.equal(after.alpha, before.alpha)
        for key in ("c2w", "fx", "fy", "cx", "cy"):
            assert torch.equal(getattr(after.cameras, key), getattr(before.cameras, key))
    assert (back.near, back.far, back.scene_type) == (scene.near, scene.far, scene.scene_type)
    assert torch.equal(back.aabb, scene.aabb)
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    assert "fl_x" not in meta and meta["frames"][3]["fl_x"] == 6.0


def test_writer_is_atomic(tmp_path, monkeypatch):
    _nerfstudio(tmp_path / "src", n=3)
    scene = load_scene(tmp_path / "src")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="taken: already exists"):
        write_nerfstudio(scene, tmp_path / "taken")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]

    calls = []

    def failing_save(image, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")

    monkeypatch.setattr(writer_module, "_save_png", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_nerfstudio(scene, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "taken"]  # no half-written folder


# ---------------------------------------------------------------- malformed input


def _drop(key, frame=None):
    def mutate(meta, root):
        del (meta if frame is None else meta["frames"][frame])[key]

    return mutate


def _set_matrix(value):
    def mutate(meta, root):
        meta["frames"][1]["transform_matrix"] = value

    return mutate


def _times(factor):
    """Multiply frame 1's matrix on the right: a diagonal scale or mirror makes it non-rigid."""

    def mutate(meta, root):
        frame = meta["frames"][1]
        frame["transform_matrix"] = (np.array(frame["transform_matrix"]) @ np.diag(factor)).tolist()

    return mutate


def _missing_image(meta, root):
    (root / "images" / "frame_001.png").unlink()


def _update(frame=None, **values):
    def mutate(meta, root):
        (meta if frame is None else meta["frames"][frame]).update(values)

    return mutate


MALFORMED = [
    ("missing image", _missing_image, r"frame 1 \(images/frame_001.png\): image file not found"),
    ("nan", _set_matrix([[float("nan")] * 4] * 4), r"frame 1 .*NaN"),
    ("scaled", _times([1.1, 1.1, 1.1, 1.0]), r"frame 1 .*not rigid"),
    ("mirrored", _times([-1.0, 1.0, 1.0, 1.0]), r"frame 1 .*not rigid"),
    ("3x4", _set_matrix([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]), r"frame 1 .*shape \[3, 4\]"),
    ("ragged", _set_matrix([[1, 0], [0, 1, 0, 0]]), r"frame 1 .*not a 4x4 matrix"),
    ("no matrix", _drop("transform_matrix", 1), r"frame 1 .*missing 'transform_matrix'"),
    ("no file_path", _drop("file_path", 1), r"frame 1 .*missing 'file_path'"),
    ("no focal", lambda meta, root: [meta.pop(k) for k in ("fl_x", "fl_y")], r"frame 0 .*no focal length"),
    ("negative focal", _update(1, fl_x=-3.0), r"frame 1 .*'fl_x' must be positive"),
    ("size mismatch", _update(2, w=16), r"frame 2 .*16x6 differs"),
    ("frame not object", lambda meta, root: meta["frames"].__setitem__(1, [1, 2]), r"frame 1 is not a JSON object"),
    ("empty frames", _update(frames=[]), r"'frames' must be a non-empty list"),
    ("no frames", _drop("frames"), r"'frames' must be a non-empty list"),
    ("fisheye360", _update(camera_model="EQUIRECTANGULAR"), r"camera_model 'EQUIRECTANGULAR' is not supported"),
    ("unknown split name", _update(test_filenames=["images/nope.png"]), r"'test_filenames' names 'images/nope.png'"),
    ("bad gen3d block", _update(gen3d={"near": 1}), r"'gen3d' must be an object"),
]


@pytest.mark.parametrize("mutate, message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_transforms_name_file_and_frame(tmp_path, mutate, message):
    meta, _ = _nerfstudio(tmp_path, n=3)
    mutate(meta, tmp_path)
    _rewrite(tmp_path, meta)
    with pytest.raises(UserError, match=message) as info:
        load_scene(tmp_path)
    assert str(tmp_path / "transforms.json") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content, message", [("{", "not valid JSON"), ("[1, 2]", "expected a JSON object at the top")])
def test_unreadable_json(tmp_path, content, message):
    (tmp_path / "transforms_train.json").write_text(content)
    with pytest.raises(UserError, match=f"transforms_train.json: {message}"):
        load_scene(tmp_path)


def test_corrupt_image_in_scene_names_the_image(tmp_path):
    _nerfstudio(tmp_path, n=3)
    (tmp_path / "images" / "frame_002.png").write_text("not a png")
    with pytest.raises(UserError, match=r"frame_002.png: not an image"):
        load_scene(tmp_path, split="none")


def test_not_a_scene_folder_lists_what_was_looked_for(tmp_path):
    looked_for = r"\(looked for transforms.json, transforms_train.json, poses_bounds.npy\)"
    with pytest.raises(UserError, match=r"not a scene folder " + looked_for):
        load_scene(tmp_path)
    with pytest.raises(UserError, match="nowhere: scene folder not found"):
        load_scene(tmp_path / "nowhere")


def test_bad_options(tmp_path):
    _nerfstudio(tmp_path, n=3)
    with pytest.raises(UserError, match="asked for 5 views but the scene has 2 training frames"):
        load_scene(tmp_path, views=5)
    for kwargs in ({"views": 0}, {"downscale": 0}, {"size": (4, 0)}, {"split": "val"}, {"background": (2, 0, 0)}):
        with pytest.raises(UserError):
            load_scene(tmp_path, **kwargs)


def _edit_rows(edit):
    def mutate(root):
        rows = np.load(root / "poses_bounds.npy")
        edit(rows)
        np.save(root / "poses_bounds.npy", rows)

    return mutate


def _nan_pose(rows):
    rows[2, 3] = np.nan


def _skewed_pose(rows):
    rows[2, 0] *= 1.5


def _inverted_bounds(rows):
    rows[4, 15:] = [5.0, 1.0]


def _missing_llff_image(root):
    (root / "images_8" / "img09.png").unlink()


def _short_rows(root):
    np.save(root / "poses_bounds.npy", np.zeros((10, 15)))


def _not_npy(root):
    (root / "poses_bounds.npy").write_text("hello")


MALFORMED_LLFF = [
    ("nan", _edit_rows(_nan_pose), r"poses_bounds.npy: pose 2 contains NaN"),
    ("non-rigid", _edit_rows(_skewed_pose), r"poses_bounds.npy: pose 2: transform is not rigid"),
    ("bounds", _edit_rows(_inverted_bounds), r"pose 4 needs .* 0 < near < far"),
    ("count", _missing_llff_image, r"poses_bounds.npy: 10 poses but images_8/ holds 9 images"),
    ("shape", _short_rows, r"shape \[10, 15\], expected \(N, 17\)"),
    ("not npy", _not_npy, r"poses_bounds.npy: not a readable .npy"),
]


@pytest.mark.parametrize("mutate, message", [m[1:] for m in MALFORMED_LLFF], ids=[m[0] for m in MALFORMED_LLFF])
def test_malformed_llff(tmp_path, mutate, message):
    _llff(tmp_path)
    mutate(tmp_path)
    with pytest.raises(UserError, match=message):
        load_scene(tmp_path)


# ---------------------------------------------------------------- view selection


def test_select_views_farthest_point_order():
    line = torch.stack([torch.arange(10.0), torch.zeros(10), torch.zeros(10)], -1)
    assert select_views(line, 3) == [0, 9, 4]  # 4 and 5 tie at distance 4: the lower index wins
    assert select_views(line, 4)[:3] == [0, 9, 4]
    assert sorted(select_views(line, 10)) == list(range(10))
    with pytest.raises(ValueError):
        select_views(line, 11)


def test_select_views_is_deterministic_and_spreads_out():
    centres = torch.randn(40, 3, generator=torch.Generator().manual_seed(3))
    picked = select_views(centres, 6)
    assert picked == select_views(centres.clone(), 6) and picked[0] == 0 and len(set(picked)) == 6

    def min_gap(indices):
        points = centres[indices]
        gaps = torch.cdist(points, points) + torch.eye(len(indices)) * 1e9
        return gaps.min().item()

    assert min_gap(picked) > 2 * min_gap(list(range(6)))


def test_select_views_with_repeated_centres_stays_distinct():
    centres = torch.zeros(5, 3)
    centres[3] = 1.0
    assert select_views(centres, 3) == [0, 3, 1]
