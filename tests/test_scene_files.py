"""Scene files: what gen3d writes trains with `ns-train` as it is, and frame files stay inside
their scene folder unless the user opts in (docs/CONVENTIONS.md: scene folders).

nerfstudio is not installed here, so `nerfstudio_problems` checks the rules its
`nerfstudio-data` parser applies to a folder: every split listed once one is, names that match a
frame's relative `file_path`, the intrinsics it reads, files that exist, alpha kept where the
scene has it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

import pytest
import torch
from PIL import Image

from gen3d.cameras import orbit
from gen3d.data import Scene, Split, load_scene, write_nerfstudio
from gen3d.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")
INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


def _relative_file(folder: Path, name, what: str, problems: list[str]) -> Path | None:
    if not isinstance(name, str) or not name:
        problems.append(f"{what}: missing")
        return None
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        problems.append(f"{what} {name!r}: not relative to the dataset folder")
        return None
    if not (folder / name).is_file():
        problems.append(f"{what} {name!r}: no such file")
        return None
    return folder / name


def nerfstudio_problems(folder: Path, alpha: bool | None = None) -> list[str]:
    """What nerfstudio's `nerfstudio-data` parser would stop on in `folder` (empty: it trains).
    `alpha`: whether the scene has an alpha channel its images must keep (None: not checked)."""
    meta = json.loads((folder / "transforms.json").read_text())
    problems: list[str] = []
    frames = meta.get("frames") or []
    if not frames:
        return ["no frames"]
    names = set()
    for i, frame in enumerate(frames):
        image = _relative_file(folder, frame.get("file_path"), f"frame {i} file_path", problems)
        names.add(os.path.normpath(frame.get("file_path") or ""))
        missing = [k for k in INTRINSICS if k not in frame and k not in meta]
        if missing:
            problems.append(f"frame {i}: no {', '.join(missing)}")
        if "mask_path" in frame:
            _relative_file(folder, frame["mask_path"], f"frame {i} mask_path", problems)
        if image is not None and alpha is not None and (Image.open(image).mode == "RGBA") != alpha:
            problems.append(f"frame {i}: alpha channel {'missing' if alpha else 'unexpected'}")
    if any(f"{s}_filenames" in meta for s in SPLITS):
        for split in ("train", "val"):  # the splits ns-train loads
            if f"{split}_filenames" not in meta:
                problems.append(f"The dataset's list of filenames for split {split} is missing.")
            elif not meta[f"{split}_filenames"]:
                problems.append(f"split {split} is empty")
        for split in SPLITS:
            unknown = [n for n in meta.get(f"{split}_filenames", []) if os.path.normpath(n) not in names]
            if unknown:
                problems.append(f"{split}_filenames names {unknown[0]!r}, which is no frame")
    return problems


def _scene(n_train: int, n_test: int, alpha: bool) -> Scene:
    cams = orbit(torch.full((n_train + n_test,), 20.0), torch.arange(n_train + n_test) * 40.0, 2.5, 40.0, 8, 8)
    gen = torch.Generator().manual_seed(0)

    def split(lo: int, hi: int, prefix: str) -> Split:
        images = torch.rand(hi - lo, 8, 8, 3, generator=gen)
        mask = (torch.rand(hi - lo, 8, 8, 1, generator=gen) > 0.3).float() if alpha else None
        return Split(images, cams[list(range(lo, hi))], [f"{prefix}/{i:03d}.png" for i in range(lo, hi)], alpha=mask)

    return Scene(train=split(0, n_train, "train"), test=split(n_train, n_train + n_test, "test") if n_test else None,
                 near=1.0, far=4.0, aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]), scene_type="bounded",
                 background=(1.0, 1.0, 1.0), source=Path("."), format="nerfstudio")


@pytest.mark.parametrize("n_test, alpha", [(2, True), (0, False), (0, True)])
def test_written_scenes_follow_nerfstudio_rules_and_read_back(tmp_path, n_test, alpha):
    folder = write_nerfstudio(_scene(4, n_test, alpha), tmp_path / "scene")
    assert nerfstudio_problems(folder, alpha) == []
    meta = json.loads((folder / "transforms.json").read_text())
    held_out = [f"test/{i:03d}.png" for i in range(4, 4 + n_test)]
    assert meta["test_filenames"] == held_out and meta["val_filenames"] == (held_out or meta["train_filenames"])
    back = load_scene(folder)
    assert len(back.train) == 4 and (back.test is None if not n_test else len(back.test) == n_test)


def test_the_shipped_example_scenes_train_with_ns_train():
    scenes = [p.parent for p in (ROOT / "scenes").glob("*/transforms.json")]
    assert scenes
    for folder in scenes:
        assert nerfstudio_problems(folder) == [], folder


def test_a_scene_without_val_filenames_is_what_ns_train_refuses(tmp_path):
    folder = write_nerfstudio(_scene(4, 2, False), tmp_path / "scene")
    meta = json.loads((folder / "transforms.json").read_text())
    del meta["val_filenames"]
    meta["frames"][0]["file_path"] = str((folder / meta["frames"][0]["file_path"]).resolve())
    (folder / "transforms.json").write_text(json.dumps(meta))
    problems = nerfstudio_problems(folder)
    assert "The dataset's list of filenames for split val is missing." in problems
    assert any("not relative" in p for p in problems)


@pytest.fixture
def outside_scene(tmp_path) -> Path:
    """A written scene whose first frame names a file outside the folder (by `..` or a symlink)."""
    folder = write_nerfstudio(_scene(4, 0, False), tmp_path / "scene")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    return folder


def _point_frame_at(folder: Path, file_path: str) -> None:
    meta = json.loads((folder / "transforms.json").read_text())
    meta["frames"][0]["file_path"] = file_path
    for split in SPLITS:  # no split lists to keep in step with the renamed frame
        meta.pop(f"{split}_filenames")
    (folder / "transforms.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_frame_files_outside_the_scene_are_refused_unless_allowed(outside_scene, how):
    secret = outside_scene.parent / "secret.png"
    if how == "symlink":
        (outside_scene / "train" / "000.png").unlink()
        (outside_scene / "train" / "000.png").symlink_to(secret)
    else:
        _point_frame_at(outside_scene, "../secret.png" if how == "dotdot" else str(secret))
    with pytest.raises(UserError, match=r"resolves outside the scene folder; to allow it set data\.allow_outside_scene=true"):
        load_scene(outside_scene)
    assert len(load_scene(outside_scene, allow_outside=True).train) > 0
