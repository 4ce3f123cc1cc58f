"""Mesh and point-cloud files, written atomically.

Axes (docs/CONVENTIONS.md): the world is z up. GLB is rotated into glTF's +y up so viewers show
objects upright; PLY and OBJ keep the world's z up unchanged. Every writer goes through
`atomic_output`, so an interrupted export never leaves a truncated file under the final name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from PIL import Image
from scipy import ndimage

from gen3d.errors import UserError
from gen3d.io import atomic_output
from gen3d.render.mesh import RayCaster, RayHits, average_subsamples, surface_colors

# Rotation by -90 degrees about x: world +z (up) -> glTF +y (up), world +y -> glTF -z.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def _export(mesh: trimesh.Trimesh, path: Path, file_type: str, **kwargs) -> Path:
    with atomic_output(path) as tmp:
        mesh.export(tmp, file_type=file_type, **kwargs)
    return Path(path)


def write_glb(mesh: trimesh.Trimesh, path: Path) -> Path:
    """Binary glTF with vertex colours, rotated from the world's z up to glTF's +y up."""
    return _export(mesh.copy().apply_transform(Z_UP_TO_Y_UP), path, "glb")


def bake_texture(mesh: trimesh.Trimesh, faces_uv: np.ndarray, uvs: np.ndarray, width: int, height: int,
                 ss: int = 2) -> np.ndarray:
    """(height, width, 3) uint8 texture holding the mesh's colours under a UV layout.

    `faces_uv` (F, 3) indexes `uvs` (U, 2) face by face in the mesh's own face and corner order, so
    a ray cast onto the flat UV layout gives the mesh face and barycentrics of every sample. Each
    texel averages ss x ss samples, so charts thinner than a texel still colour their texels;
    texels outside every chart copy their nearest chart texel, so bilinear sampling never bleeds.
    """
    flat = trimesh.Trimesh(np.c_[uvs, np.zeros(len(uvs))], faces_uv, process=False)
    # Image row 0 is the top, v = 1 (the OBJ/trimesh UV convention).
    u, v = np.meshgrid((np.arange(width * ss) + 0.5) / (width * ss),
                       1.0 - (np.arange(height * ss) + 0.5) / (height * ss))
    origins = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=-1)
    flat_hits = RayCaster(flat).cast(origins, np.tile([0.0, 0.0, -1.0], (u.size, 1)))
    hits = RayHits(flat_hits.hit, flat_hits.t, flat_hits.face, flat_hits.bary, np.zeros_like(origins))
    rgba = average_subsamples(surface_colors(mesh, hits), hits.hit, 1, height, width, ss)[0]
    texture, empty = rgba[..., :3], rgba[..., 3] == 0
    if empty.any() and not empty.all():
        nearest = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
        texture = texture[nearest[0], nearest[1]]
    return np.round(texture * 255).astype(np.uint8)


def write_textured_glb(mesh: trimesh.Trimesh, path: Path, texture_size: int = 1024) -> Path:
    """GLB with an xatlas UV atlas and the mesh's colours baked into a PNG texture (+y up, as `write_glb`).

    The texture is about `texture_size` texels across; xatlas may make it somewhat larger or
    non-square so that every chart fits with its padding. Slivers that xatlas deems degenerate keep
    uv (0, 0); they cover no pixel. Needs the optional package xatlas (`write_glb` needs nothing extra).
    """
    try:
        import xatlas
    except ImportError:
        raise UserError(f"{path}: textured GLB export needs the optional package xatlas (pip install xatlas)") from None
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.uint32))
    packing = xatlas.PackOptions()
    packing.resolution, packing.padding = texture_size, 2  # texels between charts: no seam bleeding
    atlas.generate(pack_options=packing)
    vmap, faces_uv, uvs = atlas[0]
    texture = Image.fromarray(bake_texture(mesh, faces_uv, uvs, atlas.width, atlas.height))
    visual = trimesh.visual.TextureVisuals(uv=uvs, image=texture)
    return write_glb(trimesh.Trimesh(mesh.vertices[vmap], faces_uv, visual=visual, process=False), path)


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
