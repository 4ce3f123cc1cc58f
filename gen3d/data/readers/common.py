"""What every reader hands to `load_scene`, and the checks and geometry they share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from gen3d.cameras import Cameras, unproject
from gen3d.data.images import composite, image_size, premultiply, read_image, resize
from gen3d.data.scene import SceneType, Split
from gen3d.errors import UserError

SplitMode = Literal["auto", "none"]
""""auto": the format's own holdout (Blender's test file, nerfstudio's *_filenames lists, otherwise
every 8th frame as in the LLFF protocol); "none": every frame is a training frame."""

HOLDOUT_INTERVAL = 8
RIGID_TOLERANCE = 1e-3


@dataclass
class FrameList:
    """Frames before decoding: selecting views needs only the cameras, so unused images are never read.

    cameras: at the format's full resolution. factor: how much the files in `paths` still have to
    shrink to reach the requested downscale (1 when the files are already downscaled copies).
    """

    paths: list[Path]
    cameras: Cameras
    factor: int = 1

    def select(self, indices: list[int]) -> "FrameList":
        return FrameList([self.paths[i] for i in indices], self.cameras[list(indices)], self.factor)


@dataclass
class SceneSource:
    """A parsed scene folder: frames per split and the format's scene bounds."""

    format: str
    train: FrameList
    test: FrameList | None
    near: float
    far: float
    aabb: Tensor
    scene_type: SceneType


def checked_c2w(matrix, where: str) -> np.ndarray:
    """A 4x4 rigid camera-to-world as float64, or UserError naming `where` (file and frame)."""
    try:
        c2w = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{where}: transform is not a 4x4 matrix of numbers") from None
    if c2w.shape != (4, 4):
        raise UserError(f"{where}: transform has shape {list(c2w.shape)}, expected 4x4")
    if not np.isfinite(c2w).all():
        raise UserError(f"{where}: transform contains NaN or infinity")
    rotation = c2w[:3, :3]
    orthonormal = np.abs(rotation.T @ rotation - np.eye(3)).max() <= RIGID_TOLERANCE
    proper = abs(np.linalg.det(rotation) - 1.0) <= RIGID_TOLERANCE
    if not (orthonormal and proper and np.allclose(c2w[3], [0, 0, 0, 1], atol=RIGID_TOLERANCE)):
        raise UserError(f"{where}: transform is not rigid (rotation must be orthonormal with determinant +1)")
    return c2w


def holdout(n: int, mode: SplitMode) -> tuple[list[int], list[int]]:
    """Train and test frame indices: every 8th frame from frame 0 is held out (the LLFF protocol)."""
    if mode == "none" or n < 2:
        return list(range(n)), []
    return [i for i in range(n) if i % HOLDOUT_INTERVAL], list(range(0, n, HOLDOUT_INTERVAL))


def frustum_aabb(cameras: Cameras, near: float, far: float) -> Tensor:
    """(2, 3) box around every camera's view frustum between the near and far depths."""
    w, h = cameras.width, cameras.height
    corners = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]], dtype=cameras.c2w.dtype)
    points = torch.cat([unproject(corners, depth, cameras).reshape(-1, 3) for depth in (near, far)])
    return torch.stack([points.min(0).values, points.max(0).values])


OUTSIDE_KEY = "data.allow_outside_scene"


def confine(frames: FrameList, root: Path, allow_outside: bool) -> None:
    """Every frame file must resolve inside the scene folder (symlinks followed), so a scene file
    cannot make gen3d read, and copy into a run, files from anywhere; `allow_outside` opts out."""
    if allow_outside:
        return
    inside = root.resolve()
    for path in frames.paths:
        try:
            target = path.resolve()
        except (RuntimeError, OSError):  # a symlink loop
            raise UserError(f"{root}: frame file {path} is a symlink loop") from None
        if not target.is_relative_to(inside):
            raise UserError(f"{root}: frame file {path} resolves outside the scene folder; "
                            f"to allow it set {OUTSIDE_KEY}=true (--set {OUTSIDE_KEY}=true)")


def relative_name(path: Path, root: Path) -> str:
    """The frame's name: its path below the scene folder (POSIX), or the full path when outside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def load_split(
    frames: FrameList, root: Path, size: tuple[int, int] | None, background: tuple[float, float, float]
) -> Split:
    """Decode, composite onto `background`, resize to `size` (else the files' size / factor), scale intrinsics."""
    source_size = image_size(frames.paths[0])
    target = size or tuple(max(1, round(s / frames.factor)) for s in source_size)
    width, height = target
    n = len(frames.paths)
    images = torch.empty(n, height, width, 3)
    alphas: list[Tensor | None] = []
    for i, path in enumerate(frames.paths):
        image = read_image(path)
        if (image.shape[1], image.shape[0]) != source_size:
            raise UserError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} but {frames.paths[0].name} is "
                f"{source_size[0]}x{source_size[1]}; all frames of a scene must share one size"
            )
        rgb, alpha = composite(resize(premultiply(image), target), background)
        images[i] = rgb
        alphas.append(alpha)
    alpha = None
    if any(a is not None for a in alphas):
        alpha = torch.stack([torch.ones(height, width, 1) if a is None else a for a in alphas])
    names = [relative_name(p, root) for p in frames.paths]
    return Split(images=images, cameras=frames.cameras.resized(width, height), names=names, alpha=alpha)
