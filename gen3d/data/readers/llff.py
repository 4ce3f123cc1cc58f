"""LLFF forward-facing captures: `poses_bounds.npy` plus `images/`, `images_<k>/` folders.

Each row of poses_bounds.npy is a 3x5 matrix [R | t | (H, W, focal)] (camera-to-world, rotation
columns in LLFF's [down, right, back] order, H/W/focal of the full-resolution photos) followed by
the near and far depth of the scene seen from that camera. We follow the NeRF protocol for these
scenes: rescale the world so the nearest bound is 1/0.75, and recentre so the average camera sits
at the origin looking down -z, which is what NDC ray parametrisation expects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gen3d.cameras import Cameras, look_at
from gen3d.data.readers.common import FrameList, SceneSource, SplitMode, checked_c2w, frustum_aabb, holdout
from gen3d.errors import UserError

DEFAULT_DOWNSCALE = 8  # the NeRF protocol's factor; full LLFF photos are 12 megapixels
BOUNDS_MARGIN = 0.75  # NeRF's bd_factor: the nearest bound lands at 1 / 0.75
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _read_poses_bounds(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 5) poses and (N, 2) bounds, validated."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise UserError(f"{path}: expected one .npy array, found an .npz archive")
    if array.ndim != 2 or array.shape[1] != 17 or array.shape[0] == 0:
        raise UserError(f"{path}: array has shape {list(array.shape)}, expected (N, 17) with N >= 1")
    if not np.issubdtype(array.dtype, np.number):
        raise UserError(f"{path}: array holds {array.dtype}, expected numbers")
    array = array.astype(np.float64)
    for i, row in enumerate(array):
        if not np.isfinite(row).all():
            raise UserError(f"{path}: pose {i} contains NaN or infinity")
        if (row[15:] <= 0).any() or row[15] >= row[16] or (row[[4, 9, 14]] <= 0).any():
            raise UserError(f"{path}: pose {i} needs positive H, W, focal and 0 < near < far bounds")
    if not (array[:, [4, 9]] == array[0, [4, 9]]).all():
        raise UserError(f"{path}: poses disagree on the image size (H, W); one size per scene")
    return array[:, :15].reshape(-1, 3, 5), array[:, 15:]


def _image_folder(root: Path, downscale: int) -> tuple[Path, int]:
    """`images_<d>` when present, else the closest larger copy whose factor divides d, and what is left to shrink."""
    for k in (k for k in range(downscale, 0, -1) if downscale % k == 0):
        folder = root / ("images" if k == 1 else f"images_{k}")
        if folder.is_dir():
            return folder, downscale // k
    found = sorted(p.name for p in root.glob("images*") if p.is_dir()) or ["none"]
    raise UserError(
        f"{root}: downscale {downscale} needs images_{downscale}/ or images/ "
        f"(or images_<k> with k dividing {downscale}); found: {', '.join(found)}"
    )


def _opengl_c2w(poses: np.ndarray, path: Path) -> np.ndarray:
    """[down, right, back] rotation columns to OpenGL [right, up, back], checked to be rigid."""
    c2w = np.zeros((len(poses), 4, 4))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = poses[:, :, 1], -poses[:, :, 0], poses[:, :, 2]
    c2w[:, :3, 3], c2w[:, 3, 3] = poses[:, :, 3], 1.0
    return np.stack([checked_c2w(m, f"{path}: pose {i}") for i, m in enumerate(c2w)])


def _recentred(c2w: torch.Tensor) -> torch.Tensor:
    """Express poses relative to the average camera (mean centre, summed back and up axes)."""
    center = c2w[:, :3, 3].mean(0)
    average = look_at(center, center - c2w[:, :3, 2].sum(0), up=c2w[:, :3, 1].sum(0))
    return torch.linalg.inv(average) @ c2w


def read_llff(root: Path, downscale: int | None, split: SplitMode) -> SceneSource:
    """A folder with `poses_bounds.npy`; every 8th image is held out for testing, as in the LLFF protocol."""
    path = root / "poses_bounds.npy"
    poses, bounds = _read_poses_bounds(path)
    folder, factor = _image_folder(root, downscale or DEFAULT_DOWNSCALE)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(images) != len(poses):
        raise UserError(f"{path}: {len(poses)} poses but {folder.name}/ holds {len(images)} images")
    c2w = _opengl_c2w(poses, path)
    scale = 1.0 / (bounds.min() * BOUNDS_MARGIN)
    c2w[:, :3, 3] *= scale
    bounds = bounds * scale
    c2w = _recentred(torch.from_numpy(c2w).float())
    height, width = (int(round(v)) for v in poses[0, :2, 4])
    focal = torch.from_numpy(poses[:, 2, 4]).float()
    cameras = Cameras(c2w, focal, focal, torch.tensor(width / 2), torch.tensor(height / 2), width, height)
    frames = FrameList(images, cameras, factor)
    near, far = float(bounds.min()), float(bounds.max())
    train, test = holdout(len(images), split)
    return SceneSource(
        format="llff",
        train=frames.select(train),
        test=frames.select(test) if test else None,
        near=near,
        far=far,
        aabb=frustum_aabb(cameras, near, far),
        scene_type="forward_facing",
    )
