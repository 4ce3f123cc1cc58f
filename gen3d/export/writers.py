"""Mesh and point-cloud files, written atomically.

Axes (docs/CONVENTIONS.md): the world is z up. GLB is rotated into glTF's +y up so viewers show
objects upright; PLY and OBJ keep the world's z up unchanged. Every writer goes through
`atomic_output`, so an interrupted export never leaves a truncated file under the final name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from gen3d.errors import UserError
from gen3d.export.texture import bake_texture
from gen3d.io import atomic_output

# Rotation by -90 degrees about x: world +z (up) -> glTF +y (up), world +y -> glTF -z.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def _export(mesh: trimesh.Trimesh, path: Path, file_type: str, **kwargs) -> Path:
    with atomic_output(path) as tmp:
        mesh.export(tmp, file_type=file_type, **kwargs)
    return Path(path)


def write_glb(mesh: trimesh.Trimesh, path: Path) -> Path:
    """Binary glTF with its texture or vertex colours, rotated from the world's z up to glTF's +y up."""
    return _export(mesh.copy().apply_transform(Z_UP_TO_Y_UP), path, "glb")


def write_textured_glb(mesh: trimesh.Trimesh, path: Path, texture_size: int = 1024) -> Path:
    """GLB with a UV atlas and a PNG texture (+y up, as `write_glb`). A mesh that is not textured yet
    gets its own vertex colours baked (`gen3d.export.texture.bake_texture` bakes other sources)."""
    textured = mesh if mesh.visual.kind == "texture" else bake_texture(mesh, None, texture_size, ss=2)
    return write_glb(textured, path)


def write_ply(mesh: trimesh.Trimesh, path: Path) -> Path:
    """Binary PLY with vertex colours, z up."""
    return _export(mesh, path, "ply", encoding="binary")


def write_obj(mesh: trimesh.Trimesh, path: Path) -> Path:
    """Wavefront OBJ with per-vertex colours (`v x y z r g b`), z up, no material files."""
    return _export(mesh, path, "obj", include_color=True, include_texture=False, write_texture=False)


def write_pointcloud_ply(points, colors, path: Path) -> Path:
    """Point cloud PLY: (P, 3) points and (P, 3) RGB colours, uint8 or float in [0, 1]."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    colors = np.asarray(colors)
    if colors.shape != points.shape:
        raise ValueError(f"colors {colors.shape} must match points {points.shape}")
    if colors.dtype != np.uint8:
        colors = np.round(np.clip(colors, 0.0, 1.0) * 255).astype(np.uint8)
    with atomic_output(path) as tmp:
        trimesh.PointCloud(points, colors=colors).export(tmp, file_type="ply", encoding="binary")
    return Path(path)


MESH_WRITERS = {".glb": write_glb, ".ply": write_ply, ".obj": write_obj}


def write_mesh(mesh: trimesh.Trimesh, path: Path) -> Path:
    """Write by the file's suffix: .glb, .ply or .obj."""
    writer = MESH_WRITERS.get(Path(path).suffix.lower())
    if writer is None:
        raise UserError(f"{path}: unsupported mesh format; use one of {', '.join(MESH_WRITERS)}")
    return writer(mesh, path)
