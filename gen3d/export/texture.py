"""Textures for exported meshes: an xatlas UV atlas, every texel coloured by a colour source.

The colour source is any function of surface points and normals: the field's own radiance there
(`gen3d.render.surface.surface_radiance`, what makes a file look like the renders), or a mesh's
vertex colours. Texels are located by casting rays onto the flat UV layout, which gives the mesh
face and barycentrics under each texel sample; texels outside every chart copy their nearest chart
texel (seam padding), so bilinear sampling and mip-mapping never bleed the background in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import trimesh
from PIL import Image
from scipy import ndimage

from gen3d.errors import UserError
from gen3d.render.mesh import RayCaster, RayHits, average_subsamples, surface_colors

ColorSource = Callable[[np.ndarray, np.ndarray], np.ndarray]  # points (P, 3), unit normals (P, 3) -> rgb (P, 3) in [0, 1]

MIN_TEXTURE, MAX_TEXTURE = 256, 4096
TEXELS_PER_PIXEL = 2.0  # texels per rendered pixel across: textures stay sharp at the evaluation resolution


def auto_texture_size(mesh: trimesh.Trimesh, pixel_footprint: float) -> int:
    """Texture side (a power of two) giving about TEXELS_PER_PIXEL texels per pixel across.

    `pixel_footprint` is the world size of one rendered pixel at the object (distance / focal);
    the atlas wastes about a third of its area, which the factor 1.5 pays for."""
    texels = 1.5 * mesh.area * (TEXELS_PER_PIXEL / max(pixel_footprint, 1e-9)) ** 2
    side = 2 ** math.ceil(math.log2(max(math.sqrt(texels), 1.0)))
    return int(min(max(side, MIN_TEXTURE), MAX_TEXTURE))


def uv_atlas(mesh: trimesh.Trimesh, texture_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """xatlas charts packed into about `texture_size` texels across: (vmap, faces_uv, uvs, width, height).

    `vmap` maps each atlas vertex to its mesh vertex; `faces_uv` are the mesh's faces, in order, over
    atlas vertices. Slivers that xatlas deems degenerate keep uv (0, 0); they cover no pixel."""
    try:
        import xatlas
    except ImportError:
        raise UserError("textured export needs the package xatlas (pip install xatlas)") from None
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.uint32))
    charting = xatlas.ChartOptions()
    charting.max_iterations = 0  # one pass of chart growing: 4x faster on 100k-face scans, charts as good
    packing = xatlas.PackOptions()
    packing.resolution, packing.padding = int(texture_size), 2  # texels between charts: no seam bleeding
    atlas.generate(chart_options=charting, pack_options=packing)
    vmap, faces_uv, uvs = atlas[0]
    return vmap, faces_uv, uvs, atlas.width, atlas.height


def _texel_hits(faces_uv: np.ndarray, uvs: np.ndarray, width: int, height: int, ss: int) -> RayHits:
    """Mesh face and barycentrics under each of the (height * ss) x (width * ss) texel samples."""
    flat = trimesh.Trimesh(np.c_[uvs, np.zeros(len(uvs))], faces_uv, process=False)
    # Image row 0 is the top, v = 1 (the glTF/OBJ UV convention).
    u, v = np.meshgrid((np.arange(width * ss) + 0.5) / (width * ss), 1.0 - (np.arange(height * ss) + 0.5) / (height * ss))
    origins = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=-1)
    hits = RayCaster(flat).cast(origins, np.tile([0.0, 0.0, -1.0], (u.size, 1)))
    return RayHits(hits.hit, hits.t, hits.face, hits.bary, np.zeros_like(origins))


def pad_charts(texture: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Texels outside every chart take the colour of their nearest covered texel (seam padding)."""
    if covered.all() or not covered.any():
        return texture
    nearest = ndimage.distance_transform_edt(~covered, return_distances=False, return_indices=True)
    return texture[nearest[0], nearest[1]]


def bake_texture(mesh: trimesh.Trimesh, source: ColorSource | None, texture_size: int, ss: int = 1) -> trimesh.Trimesh:
    """A copy of `mesh` with an xatlas UV layout and a texture holding `source`'s colours.

    source=None bakes the mesh's own colours. Each texel averages ss x ss samples (ss = 1 for
    costly sources such as a field)."""
    vmap, faces_uv, uvs, width, height = uv_atlas(mesh, texture_size)
    hits = _texel_hits(faces_uv, uvs, width, height, ss)
    if source is None:
        rgb = surface_colors(mesh, hits)
    else:
        corners = mesh.faces[hits.face[hits.hit]]
        bary = hits.bary[hits.hit][..., None]
        points = (mesh.vertices[corners] * bary).sum(1)
        normals = (mesh.vertex_normals[corners] * bary).sum(1)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)
        rgb = np.zeros((len(hits.hit), 3))
        rgb[hits.hit] = source(points, normals)
    rgba = average_subsamples(rgb, hits.hit, 1, height, width, ss)[0]
    texture = pad_charts(rgba[..., :3], rgba[..., 3] > 0)
    image = Image.fromarray(np.round(np.clip(texture, 0, 1) * 255).astype(np.uint8))
    visual = trimesh.visual.TextureVisuals(uv=uvs, image=image)
    return trimesh.Trimesh(mesh.vertices[vmap], faces_uv, visual=visual, process=False)


def color_vertices(mesh: trimesh.Trimesh, source: ColorSource) -> trimesh.Trimesh:
    """A copy of `mesh` with vertex colours from `source` at its vertices (PLY, OBJ, vertex-coloured GLB)."""
    rgb = np.clip(source(np.asarray(mesh.vertices), np.asarray(mesh.vertex_normals)), 0, 1)
    colors = np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], axis=1).astype(np.uint8)
    return trimesh.Trimesh(mesh.vertices.copy(), mesh.faces.copy(), vertex_colors=colors, process=False)
