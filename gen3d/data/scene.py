"""The one in-memory scene type that every reader produces and the engine consumes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import Tensor

from gen3d.cameras import Cameras

SceneType = Literal["bounded", "unbounded", "forward_facing"]
"""How the engine should parametrise space: "bounded" samples inside `aabb`; "unbounded" contracts
space outside `aabb` (360 degree real captures); "forward_facing" suits NDC rays (LLFF captures,
whose cameras all look down -z with the near plane in front of them)."""


def is_capture(scene_type: SceneType) -> bool:
    """A real capture (forward-facing or unbounded photos) rather than a bounded object."""
    return scene_type != "bounded"


@dataclass
class Split:
    """Images with their cameras, one size for all.

    images: (N, H, W, 3) float32 in [0, 1], already composited onto the scene background.
    alpha: (N, H, W, 1) coverage when the files had transparency, else None.
    names: file paths relative to the scene folder, in the order of `images`.
    """

    images: Tensor
    cameras: Cameras
    names: list[str]
    alpha: Tensor | None = None

    def __post_init__(self) -> None:
        n, height, width = self.images.shape[:3]
        if self.images.shape[3] != 3 or len(self.cameras) != n or len(self.names) != n:
            raise ValueError(f"split of {n} images needs (N, H, W, 3) images, N cameras and N names")
        if (self.cameras.width, self.cameras.height) != (width, height):
            raise ValueError("camera image size does not match the images")
        if self.alpha is not None and self.alpha.shape != (n, height, width, 1):
            raise ValueError("alpha must be (N, H, W, 1)")

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class Scene:
    """A posed image collection, whatever format it came from.

    near, far: depth range along camera rays worth sampling. aabb: (2, 3) min and max corners of the
    region holding the content (the inner region for unbounded scenes). background: the RGB the
    images were composited onto. source: the scene folder. format: "blender", "llff", "nerfstudio"
    or "instant-ngp".
    """

    train: Split
    test: Split | None
    near: float
    far: float
    aabb: Tensor
    scene_type: SceneType
    background: tuple[float, float, float]
    source: Path
    format: str
