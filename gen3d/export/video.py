"""Turntable previews of meshes as MP4 (H.264) and GIF.

MP4s use libx264 with yuv420p, the combination every browser and phone plays; yuv420p needs even
frame sizes, so odd frames are padded by one edge pixel rather than resized (no resampling blur).
"""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import trimesh

from gen3d.cameras import turntable
from gen3d.io import atomic_output
from gen3d.render.mesh import ShadingConfig, render_mesh

# Fraction of the frame height left around the object's bounding sphere when the radius is automatic.
_FRAME_MARGIN = 1.15


def fit_radius(mesh: trimesh.Trimesh, fov_deg: float) -> float:
    """Camera distance at which a sphere around the origin enclosing the mesh fills the frame height."""
    extent = float(np.linalg.norm(mesh.vertices, axis=1).max()) if len(mesh.vertices) else 1.0
    return _FRAME_MARGIN * extent / math.sin(math.radians(fov_deg) / 2)


def render_turntable(mesh: trimesh.Trimesh, n_frames: int = 36, size: int = 256, elevation: float = 15.0,
                     radius: float | None = None, fov: float = 40.0, *, shading: ShadingConfig | None = None,
                     ss: int = 2, batch: int = 8) -> np.ndarray:
    """(n_frames, size, size, 3) uint8 frames circling the object (azimuth from +x), on white.

    radius=None frames the whole mesh; shading defaults to the standard Lambertian light.
    Frames are ray-cast `batch` cameras at a time to bound memory.
    """
    cams = turntable(n_frames, elevation, radius if radius is not None else fit_radius(mesh, fov), fov, size, size)
    shading = shading if shading is not None else ShadingConfig()
    chunks = [render_mesh(mesh, cams[i:i + batch], shading=shading, ss=ss).composited()
              for i in range(0, n_frames, batch)]
    frames = np.concatenate([c.numpy() for c in chunks])
    return np.round(frames * 255).astype(np.uint8)


def _even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else frames


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (N, H, W, 3|4) uint8 array, got {frames.shape} {frames.dtype}")
    return frames[..., :3]


def write_video(frames: np.ndarray, path: Path, fps: int = 24, quality: int = 8) -> Path:
    """H.264 MP4 (libx264, yuv420p) of (N, H, W, 3) uint8 frames; quality 0-10 (imageio's scale)."""
    frames = _even(_check_frames(frames))
    with atomic_output(path) as tmp, imageio_v2.get_writer(
            tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=quality, pixelformat="yuv420p",
            macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(frame)
    return Path(path)


def write_gif(frames: np.ndarray, path: Path, fps: int = 12) -> Path:
    """Looping GIF of (N, H, W, 3) uint8 frames."""
    frames = _check_frames(frames)
    with atomic_output(path) as tmp:
        iio.imwrite(tmp, frames, extension=".gif", duration=round(1000 / fps), loop=0)
    return Path(path)
