"""Write a `Scene` as a nerfstudio dataset: PNG images plus `transforms.json`.

The layout follows nerfstudio's documented format (camera_model "OPENCV", fl_x, fl_y, cx, cy,
w, h, frames with file_path and an OpenGL transform_matrix, train_/val_/test_filenames for the
split), so `ns-train` reads it as it is. A "gen3d" block keeps near, far, aabb and scene type, which nerfstudio
ignores and `load_scene` uses, so that a written scene reads back as the same Scene.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gen3d.cameras import Cameras
from gen3d.data.scene import Scene, Split
from gen3d.errors import UserError
from gen3d.io import shared_mode


def _file_name(name: str, index: int) -> str:
    """Keep the frame's own relative path (as PNG) so names survive a round trip; number unsafe ones."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        path = PurePosixPath("images") / f"{index:05d}_{path.name or 'frame'}"
    return str(path.with_suffix(".png"))


def _straight_rgba(rgb: Tensor, alpha: Tensor, background: tuple[float, float, float]) -> Tensor:
    """Undo compositing onto `background`, so a reader compositing the PNG again gets `rgb` back."""
    bg = torch.tensor(background, dtype=rgb.dtype)
    color = (rgb - bg * (1.0 - alpha)) / alpha.clamp(min=1e-8)
    color = torch.where(alpha > 0, color, bg).clamp(0.0, 1.0)
    return torch.cat([color, alpha], dim=-1)


def _save_png(image: Tensor, path: Path) -> None:
    pixels = (image * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format="PNG")


NERFSTUDIO_INTRINSICS = {"fl_x": "fx", "fl_y": "fy", "cx": "cx", "cy": "cy"}


def _intrinsics(cameras: Cameras, i: int) -> dict:
    return {key: float(getattr(cameras, attr)[i]) for key, attr in NERFSTUDIO_INTRINSICS.items()}


def _frames(split: Split, background, folder: Path, first_index: int, shared: bool) -> list[dict]:
    frames = []
    for i in range(len(split)):
        file_name = _file_name(split.names[i], first_index + i)
        image = split.images[i] if split.alpha is None else _straight_rgba(split.images[i], split.alpha[i], background)
        _save_png(image, folder / file_name)
        frame = {"file_path": file_name, "transform_matrix": split.cameras.c2w[i].tolist()}
        if not shared:
            frame.update(_intrinsics(split.cameras, i))
        frames.append(frame)
    return frames


def split_lists(train: list[str], held_out: list[str]) -> dict[str, list[str]]:
    """nerfstudio's split lists: once one `*_filenames` list is given every split must be
    ("The dataset's list of filenames for split val is missing"), and ns-train evaluates on `val`,
    so val holds the held-out frames, or the training frames when there are none; `test` stays
    the held-out frames (empty: gen3d reads the scene back without a test split)."""
    return {"train_filenames": train, "val_filenames": held_out or train, "test_filenames": held_out}


def write_nerfstudio(scene: Scene, out_dir: Path) -> Path:
    """Write `scene` into the new folder `out_dir` (built in a temporary sibling, then renamed into place)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir}: already exists and is not an empty folder")
    splits = [s for s in (scene.train, scene.test) if s is not None]
    cameras = Cameras.cat([s.cameras for s in splits])
    all_names = [n for s in splits for n in s.names]
    if len({_file_name(n, i) for i, n in enumerate(all_names)}) != len(all_names):
        raise ValueError("frame names must be unique across train and test to be written")
    intrinsics = torch.stack([cameras.fx, cameras.fy, cameras.cx, cameras.cy])
    shared = bool((intrinsics == intrinsics[:, :1]).all())

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tmp.chmod(shared_mode(folder=True))  # mkdtemp makes it private; the dataset is an ordinary folder
        train = _frames(scene.train, scene.background, tmp, 0, shared)
        test = [] if scene.test is None else _frames(scene.test, scene.background, tmp, len(train), shared)
        meta = {"camera_model": "OPENCV", "w": cameras.width, "h": cameras.height}
        if shared:
            meta.update(_intrinsics(cameras, 0))
        meta["frames"] = train + test
        meta.update(split_lists([f["file_path"] for f in train], [f["file_path"] for f in test]))
        meta["gen3d"] = {
            "near": scene.near,
            "far": scene.far,
            "aabb": scene.aabb.tolist(),
            "scene_type": scene.scene_type,
        }
        (tmp / "transforms.json").write_text(json.dumps(meta, indent=2))
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
