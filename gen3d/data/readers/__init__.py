"""`load_scene`: detect a scene folder's format by its content and load it into a `Scene`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from gen3d.data.readers.common import SceneSource, SplitMode, confine, load_split
from gen3d.data.readers.llff import read_llff
from gen3d.data.readers.transforms import read_blender, read_transforms
from gen3d.data.scene import Scene
from gen3d.data.views import select_views
from gen3d.errors import UserError

Reader = Callable[[Path, int | None, SplitMode], SceneSource]

# The file that marks each format, in the order they are looked for.
READERS: dict[str, Reader] = {
    "transforms.json": read_transforms,
    "transforms_train.json": read_blender,
    "poses_bounds.npy": read_llff,
}


def detect(path: Path) -> tuple[Path, Reader]:
    """The scene folder and its reader; `path` may also name the marker file itself."""
    path = Path(path)
    if path.is_file() and path.name in READERS:
        return path.parent, READERS[path.name]
    if not path.exists():
        raise UserError(f"{path}: scene folder not found")
    for marker, reader in READERS.items():
        if (path / marker).is_file():
            return path, reader
    raise UserError(f"{path}: not a scene folder (looked for {', '.join(READERS)})")


def _check_options(downscale, size, views, background, split) -> None:
    if split not in ("auto", "none"):
        raise UserError(f"split must be 'auto' or 'none', got {split!r}")
    if downscale is not None and (not isinstance(downscale, int) or downscale < 1):
        raise UserError(f"downscale must be a positive integer, got {downscale!r}")
    if size is not None and (len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size)):
        raise UserError(f"size must be (width, height) in positive integers, got {size!r}")
    if views is not None and (not isinstance(views, int) or views < 1):
        raise UserError(f"views must be a positive integer, got {views!r}")
    if len(background) != 3 or any(not 0.0 <= c <= 1.0 for c in background):
        raise UserError(f"background must be 3 numbers in [0, 1], got {background!r}")


def scan_scene(path: Path, *, split: SplitMode = "auto", downscale: int | None = None, views: int | None = None,
               allow_outside: bool = False) -> tuple[Path, SceneSource]:
    """Parse a scene folder without decoding an image: its format, cameras and frame files, every
    frame inside the folder (unless `allow_outside`) and enough training frames for `views`. The
    validation pass runs it before a run folder exists; `load_scene` starts with it."""
    root, reader = detect(path)
    source = reader(root, downscale, split)
    for frames in (source.train, source.test):
        if frames is not None:
            confine(frames, root, allow_outside)
    if views is not None and views > len(source.train.paths):
        raise UserError(f"{root}: asked for {views} views but the scene has {len(source.train.paths)} training frames")
    return root, source


def load_scene(
    path: Path,
    *,
    split: SplitMode = "auto",
    downscale: int | None = None,
    size: tuple[int, int] | None = None,
    views: int | None = None,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    allow_outside: bool = False,
) -> Scene:
    """Load a nerfstudio / instant-ngp, Blender or LLFF scene folder.

    downscale: shrink by this integer factor from the format's full resolution (area averaging;
    LLFF defaults to 8, the NeRF protocol, and reads `images_<d>/` copies when present). size:
    (width, height) to resize to instead. views: keep only this many training frames, picked by
    `select_views` so the same K frames come back every time. Only the kept frames are decoded.
    allow_outside: accept frame files that resolve outside the scene folder (refused by default).
    """
    _check_options(downscale, size, views, background, split)
    root, source = scan_scene(path, split=split, downscale=downscale, views=views, allow_outside=allow_outside)
    train = source.train
    if views is not None:
        train = train.select(sorted(select_views(train.cameras.centers, views)))
    size = None if size is None else (size[0], size[1])
    background = tuple(float(c) for c in background)
    return Scene(
        train=load_split(train, root, size, background),
        test=None if source.test is None else load_split(source.test, root, size, background),
        near=source.near,
        far=source.far,
        aabb=source.aabb,
        scene_type=source.scene_type,
        background=background,
        source=root,
        format=source.format,
    )
