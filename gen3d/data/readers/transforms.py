"""`transforms*.json` scenes: nerfstudio and instant-ngp (`transforms.json`) and Blender nerf_synthetic.

All three store OpenGL camera-to-world `transform_matrix` per frame; they differ in where the
intrinsics live (top level or per frame; focal lengths or fields of view) and in how the scene is
bounded. Our own writer adds a "gen3d" block with the bounds so a written scene reads back as it was.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gen3d.cameras import Cameras, focal_from_fov
from gen3d.data.images import has_alpha, image_size
from gen3d.data.readers.common import FrameList, SceneSource, SplitMode, checked_c2w, holdout
from gen3d.data.scene import SceneType
from gen3d.errors import UserError

BLENDER_HALF_EXTENT = 1.5  # nerf_synthetic objects fit in [-1.5, 1.5]^3
BLENDER_NEAR, BLENDER_FAR = 2.0, 6.0
# instant-ngp maps world to its unit cube by x * scale + offset, with these defaults.
NGP_SCALE, NGP_OFFSET = 0.33, 0.5
# nerfstudio's near and far for unbounded scenes, in units of a box that holds the cameras.
UNBOUNDED_NEAR, UNBOUNDED_FAR = 0.05, 1000.0
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
PINHOLE_MODELS = {"PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "OPENCV_FISHEYE", "SIMPLE_RADIAL", "RADIAL"}
SCENE_TYPES = ("bounded", "unbounded", "forward_facing")


def read_json(path: Path) -> dict:
    """The JSON object in `path`, or a one-line UserError saying why not."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object at the top level")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise UserError(f"{path}: 'frames' must be a non-empty list")
    return meta


def _image_path(folder: Path, file_path, where: str) -> Path:
    """The image a frame names; like instant-ngp, a name without extension means a PNG."""
    if not isinstance(file_path, str) or not file_path:
        raise UserError(f"{where}: missing 'file_path'")
    path = folder / file_path
    if not path.is_file() and not path.suffix:
        path = Path(f"{path}.png")
    if not path.is_file():
        raise UserError(f"{where}: image file not found: {path}")
    return path


def _number(value, key: str, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: '{key}' must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise UserError(f"{where}: '{key}' must be positive, got {value!r}")
    return float(value)


def _intrinsics(frame: dict, meta: dict, image: Path, where: str) -> tuple[float, float, float, float, int, int]:
    """fx, fy, cx, cy, w, h; per-frame keys override top-level ones, sizes missing from the file come from the image."""

    def get(key):
        return frame.get(key, meta.get(key))

    if get("w") is None or get("h") is None:
        width, height = image_size(image)
    else:
        width, height = (int(_number(get(k), k, where, positive=True)) for k in ("w", "h"))
    fx = fy = None
    if get("fl_x") is not None:
        fx = _number(get("fl_x"), "fl_x", where, positive=True)
    elif get("camera_angle_x") is not None:
        fx = focal_from_fov(_number(get("camera_angle_x"), "camera_angle_x", where, positive=True), width)
    if get("fl_y") is not None:
        fy = _number(get("fl_y"), "fl_y", where, positive=True)
    elif get("camera_angle_y") is not None:
        fy = focal_from_fov(_number(get("camera_angle_y"), "camera_angle_y", where, positive=True), height)
    if fx is None and fy is None:
        raise UserError(f"{where}: no focal length: needs 'fl_x' or 'camera_angle_x'")
    fx, fy = fx or fy, fy or fx
    cx = width / 2 if get("cx") is None else _number(get("cx"), "cx", where)
    cy = height / 2 if get("cy") is None else _number(get("cy"), "cy", where)
    return fx, fy, cx, cy, width, height


def _check_lens(meta: dict, frames: list[dict], path: Path) -> None:
    """Refuse non-pinhole projections; warn that lens distortion is ignored rather than fail on it."""
    for entry in (meta, *frames):
        model = entry.get("camera_model")
        if model is not None and model not in PINHOLE_MODELS:
            raise UserError(f"{path}: camera_model {model!r} is not supported (pinhole-like models only)")
    distorted = sorted({k for entry in (meta, *frames) for k in DISTORTION_KEYS if entry.get(k) not in (None, 0, 0.0)})
    if distorted:
        message = f"{path}: lens distortion ({', '.join(distorted)}) ignored; images are used as pinhole"
        warnings.warn(message, stacklevel=3)


def read_frames(path: Path, meta: dict) -> FrameList:
    """Every frame of a transforms file, validated, with cameras at the declared (full) size."""
    folder = path.parent
    frames = meta["frames"]
    _check_lens(meta, [f for f in frames if isinstance(f, dict)], path)
    paths, c2ws, intrinsics = [], [], []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise UserError(f"{path}: frame {i} is not a JSON object")
        where = f"{path}: frame {i} ({frame.get('file_path', 'no file_path')})"
        if "transform_matrix" not in frame:
            raise UserError(f"{where}: missing 'transform_matrix'")
        c2ws.append(checked_c2w(frame["transform_matrix"], where))
        paths.append(_image_path(folder, frame.get("file_path"), where))
        intrinsics.append(_intrinsics(frame, meta, paths[-1], where))
        if intrinsics[-1][4:] != intrinsics[0][4:]:
            w, h = intrinsics[-1][4:]
            raise UserError(f"{where}: image size {w}x{h} differs from frame 0's; one size per scene")
    fx, fy, cx, cy = (torch.tensor([k[j] for k in intrinsics]) for j in range(4))
    width, height = intrinsics[0][4:]
    c2w = torch.from_numpy(np.stack(c2ws)).float()
    return FrameList(paths, Cameras(c2w, fx, fy, cx, cy, width, height))


def _prefer_downscaled(frames: FrameList, root: Path, downscale: int) -> FrameList:
    """Use nerfstudio's pre-shrunk copies `images_<d>/<name>` when every frame has one."""
    folder = root / f"images_{downscale}"
    copies = [folder / p.name for p in frames.paths]
    if downscale > 1 and all(c.is_file() for c in copies):
        return FrameList(copies, frames.cameras, 1)
    return FrameList(frames.paths, frames.cameras, downscale)


def _named_split(meta: dict, frames: list[dict], path: Path) -> tuple[list[int], list[int]] | None:
    """Train and test indices from nerfstudio's train_/val_/test_filenames lists, if the file has them."""
    lists = {key: meta.get(f"{key}_filenames") for key in ("train", "val", "test")}
    if all(v is None for v in lists.values()):
        return None
    index_of = {os.path.normpath(f["file_path"]): i for i, f in enumerate(frames)}

    def indices(key: str) -> list[int]:
        names = lists[key] or []
        missing = [n for n in names if os.path.normpath(n) not in index_of]
        if missing:
            raise UserError(f"{path}: '{key}_filenames' names {missing[0]!r}, which is no frame's file_path")
        return [index_of[os.path.normpath(n)] for n in names]

    test = indices("test") if lists["test"] is not None else indices("val")  # a test list, even empty, wins
    held_out = set(test)
    train = indices("train") if lists["train"] is not None else [i for i in range(len(frames)) if i not in held_out]
    return train, test


def _object_box(cameras: Cameras) -> torch.Tensor:
    """The cube the cameras look at, for object captures (frames with alpha): centred on the point
    nearest to every optical axis, as large as the widest view's field at that point's distance
    (an object that fills the photos fits; a quarter more for margin)."""
    centers, axes = cameras.centers.double(), -cameras.c2w[:, :3, 2].double()
    across = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]  # projects off each axis
    middle = torch.linalg.lstsq(across.sum(0), (across @ centers[:, :, None]).sum(0)).solution[:, 0]
    distance = ((middle - centers) * axes).sum(-1).clamp_min(1e-6)
    tangent = torch.maximum(cameras.width / (2 * cameras.fx), cameras.height / (2 * cameras.fy)).double()
    half = 1.25 * (distance * tangent.expand_as(distance)).max()
    return torch.stack([middle - half, middle + half]).float()


def _box_around_cameras(cameras: Cameras) -> torch.Tensor:
    """A cube centred on the cameras' centroid that holds them all: object captures look inward."""
    centers = cameras.centers
    middle = centers.mean(0)
    half = (centers - middle).abs().max().clamp(min=1e-6)
    return torch.stack([middle - half, middle + half])


def _near_far_to_box(cameras: Cameras, aabb: torch.Tensor) -> tuple[float, float]:
    """Nearest and farthest distances from any camera centre to the box (near floored at 1% of its size)."""
    centers = cameras.centers
    gap = torch.maximum(aabb[0] - centers, centers - aabb[1]).clamp(min=0).norm(dim=-1)
    corners = torch.cartesian_prod(*aabb.T)
    farthest = torch.cdist(centers, corners).max()
    floor = 0.01 * (aabb[1] - aabb[0]).norm()
    return float(torch.maximum(gap.min(), floor)), float(farthest)


def _gen3d_bounds(block, path: Path) -> tuple[float, float, torch.Tensor, SceneType]:
    """The bounds our writer stores, validated like any user input."""
    where = f"{path}: 'gen3d'"
    if not isinstance(block, dict) or not {"near", "far", "aabb", "scene_type"} <= set(block):
        raise UserError(f"{where} must be an object with near, far, aabb and scene_type")
    near = _number(block["near"], "near", where, positive=True)
    far = _number(block["far"], "far", where, positive=True)
    aabb = np.asarray(block["aabb"], dtype=object)
    if aabb.shape != (2, 3):
        raise UserError(f"{where}: 'aabb' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]]")
    aabb = torch.tensor([[_number(v, "aabb", where) for v in row] for row in aabb])
    if block["scene_type"] not in SCENE_TYPES:
        raise UserError(f"{where}: 'scene_type' must be one of {list(SCENE_TYPES)}")
    return near, far, aabb, block["scene_type"]


def _ngp_box(meta: dict, path: Path) -> torch.Tensor:
    """instant-ngp's box: its unit cube grown `aabb_scale` times, mapped back through scale and offset.

    instant-ngp cycles axes (its x, y, z are world y, z, x), so the offset is reordered accordingly.
    """
    where = f"{path}: instant-ngp keys"
    aabb_scale = _number(meta["aabb_scale"], "aabb_scale", where, positive=True)
    scale = _number(meta.get("scale", NGP_SCALE), "scale", where, positive=True)
    offset = meta.get("offset", [NGP_OFFSET] * 3)
    if not isinstance(offset, list) or len(offset) != 3:
        raise UserError(f"{where}: 'offset' must be a list of 3 numbers")
    ngp_offset = torch.tensor([_number(v, "offset", where) for v in offset])
    center = (0.5 - ngp_offset[[2, 0, 1]]) / scale
    half = 0.5 * aabb_scale / scale
    return torch.stack([center - half, center + half])


def read_transforms(root: Path, downscale: int | None, split: SplitMode) -> SceneSource:
    """A folder with `transforms.json` (nerfstudio or instant-ngp)."""
    path = root / "transforms.json"
    meta = read_json(path)
    frames = _prefer_downscaled(read_frames(path, meta), root, downscale or 1)
    named = _named_split(meta, meta["frames"], path) if split == "auto" else None
    train, test = named or holdout(len(frames.paths), split)
    if not train:
        raise UserError(f"{path}: no training frames left after the train/test split")
    cameras = frames.cameras
    if "gen3d" in meta:
        near, far, aabb, scene_type = _gen3d_bounds(meta["gen3d"], path)
        fmt = "nerfstudio"
    elif "aabb_scale" in meta:
        aabb = _ngp_box(meta, path)
        near, far = _near_far_to_box(cameras, aabb)
        scene_type, fmt = ("bounded" if meta["aabb_scale"] == 1 else "unbounded"), "instant-ngp"
    elif has_alpha(frames.paths[0]):
        aabb = _object_box(cameras)
        near, far = _near_far_to_box(cameras, aabb)
        scene_type, fmt = "bounded", "nerfstudio"
    else:
        aabb = _box_around_cameras(cameras)
        half = float(aabb[1, 0] - aabb[0, 0]) / 2
        near, far, scene_type, fmt = UNBOUNDED_NEAR * half, UNBOUNDED_FAR * half, "unbounded", "nerfstudio"
    return SceneSource(
        format=fmt,
        train=frames.select(train),
        test=frames.select(test) if test else None,
        near=near,
        far=far,
        aabb=aabb,
        scene_type=scene_type,
    )


def read_blender(root: Path, downscale: int | None, split: SplitMode) -> SceneSource:
    """A nerf_synthetic folder: `transforms_train.json` and, for the test split, `transforms_test.json`."""
    factor = downscale or 1
    train_path, test_path = root / "transforms_train.json", root / "transforms_test.json"
    train = replace(read_frames(train_path, read_json(train_path)), factor=factor)
    test = None
    if split == "auto" and test_path.is_file():
        test = replace(read_frames(test_path, read_json(test_path)), factor=factor)
    half = BLENDER_HALF_EXTENT
    return SceneSource(
        format="blender",
        train=train,
        test=test,
        near=BLENDER_NEAR,
        far=BLENDER_FAR,
        aabb=torch.tensor([[-half] * 3, [half] * 3]),
        scene_type="bounded",
    )
