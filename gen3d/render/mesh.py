"""The project's one triangle-mesh renderer: exact ray casting with open3d's Embree scene.

Ray casting (rather than a rasteriser) gives masks that are exactly the projection of the mesh at
pixel centres, metric depth and per-pixel face ids, on any CPU, deterministically: every ray is
cast independently, so results do not depend on the thread count. ShapeWorld renders its training
views with it, geometry checks compare its masks and depths, and turntables of exported meshes use
it too.

Conventions: cameras are `gen3d.cameras.Cameras` (OpenGL axes, world z up). `rgba` holds straight
(not premultiplied) colour, like a PNG; composite with `MeshRender.composited`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from torch import Tensor

from gen3d.cameras import Cameras, generate_rays

DEFAULT_COLOR = (0.7, 0.7, 0.7)


@dataclass
class ShadingConfig:
    """Lambertian shading with one world-fixed directional light plus ambient.

    The defaults light ShapeWorld objects from above and from the -y side, so tops are brightest,
    sides stay distinguishable and nothing is darker than `ambient` (no black silhouettes).
    `ambient + diffuse = 1` keeps a surface facing the light at exactly its albedo.
    """

    ambient: float = 0.35
    diffuse: float = 0.65
    # Direction from the surface towards the light (normalised when used).
    light_dir: tuple[float, float, float] = (0.3, -0.5, 0.8)


@dataclass
class MeshRender:
    """Ray-cast images of N cameras; empty pixels have alpha 0, rgb 0, depth 0, normal 0, face -1.

    rgba: (N, H, W, 4) float in [0, 1], straight colour, alpha = pixel coverage (antialiased
    when rendered with ss > 1). depth: (N, H, W) distance along the camera's -z axis. normals:
    (N, H, W, 3) world-space unit face normals, flipped to face the camera. face_ids: (N, H, W)
    int64 index of the hit triangle. depth, normals and face_ids are sampled at pixel centres.
    """

    rgba: Tensor
    depth: Tensor
    normals: Tensor
    face_ids: Tensor

    @property
    def mask(self) -> Tensor:
        """(N, H, W) bool: pixels at least half covered (exactly the hits when ss = 1)."""
        return self.rgba[..., 3] >= 0.5

    def composited(self, background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Tensor:
        """(N, H, W, 3) colour over a flat background (white by the project's convention)."""
        alpha = self.rgba[..., 3:]
        return self.rgba[..., :3] * alpha + torch.tensor(background, dtype=self.rgba.dtype) * (1 - alpha)


@dataclass
class RayHits:
    """First hits of a flat batch of R rays (numpy, float64); misses have t 0, face -1, normal 0."""

    hit: np.ndarray  # (R,) bool
    t: np.ndarray  # (R,) distance along the unit ray direction
    face: np.ndarray  # (R,) int64 triangle index
    bary: np.ndarray  # (R, 3) weights of the triangle's three corners
    normal: np.ndarray  # (R, 3) unit face normal, flipped to face the ray origin


class RayCaster:
    """open3d's Embree BVH over one mesh, built once and cast against many times."""

    def __init__(self, mesh: trimesh.Trimesh):
        import open3d as o3d  # imported here: it takes seconds to load and most commands never render

        self.mesh = mesh
        self._scene = o3d.t.geometry.RaycastingScene()
        if len(mesh.faces):
            self._scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(mesh.vertices, dtype=np.float32)),
                                      o3d.core.Tensor(np.ascontiguousarray(mesh.faces, dtype=np.uint32)))

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> RayHits:
        """Hits of rays (R, 3) origins and (R, 3) unit directions."""
        import open3d as o3d

        rays = np.concatenate([origins, dirs], axis=-1).astype(np.float32)
        out = self._scene.cast_rays(o3d.core.Tensor(rays))
        t = out["t_hit"].numpy().astype(np.float64)
        hit = np.isfinite(t)
        miss = ~hit
        t[miss] = 0.0
        face = out["primitive_ids"].numpy().astype(np.int64)
        face[miss] = -1
        bary = np.empty((len(t), 3))
        bary[:, 1:] = out["primitive_uvs"].numpy()
        bary[:, 0] = 1.0 - bary[:, 1] - bary[:, 2]
        bary[miss] = 0.0
        normal = self.mesh.face_normals[np.maximum(face, 0)] if len(self.mesh.faces) else np.zeros((len(t), 3))
        normal *= np.where(np.einsum("rc,rc->r", normal, dirs) > 0, -1.0, 1.0)[:, None]
        normal[miss] = 0.0
        return RayHits(hit, t, face, bary, normal)

    def unobstructed(self, origins: np.ndarray, targets: np.ndarray, clearance: float) -> np.ndarray:
        """(R,) bool: nothing of the mesh lies between each origin (moved `clearance` towards its
        target, off its own surface) and its target."""
        offset = targets - origins
        distance = np.linalg.norm(offset, axis=1)
        dirs = offset / np.maximum(distance, 1e-12)[:, None]
        hits = self.cast(origins + clearance * dirs, dirs)
        return ~hits.hit | (hits.t >= distance - 2 * clearance)


def sample_texture(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(P, 3) bilinear samples of an (H, W, C) image in [0, 1] at UVs (P, 2); v = 1 is the top row
    (the glTF/OBJ convention), UVs outside [0, 1] clamp to the edge."""
    h, w = image.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0, :3] * (1 - fx) + image[y0, x1, :3] * fx
    bottom = image[y1, x0, :3] * (1 - fx) + image[y1, x1, :3] * fx
    return top * (1 - fy) + bottom * fy


def _texture_image(visual) -> np.ndarray | None:
    material = getattr(visual, "material", None)
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if image is None or visual.uv is None:
        return None
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def surface_colors(mesh: trimesh.Trimesh, hits: RayHits, color: tuple[float, float, float] | None = None) -> np.ndarray:
    """(R, 3) unlit colour at each hit (0 at misses): `color` if given, else the mesh's texture
    (bilinear, at the hit's interpolated UV), vertex colours (barycentric interpolation), face
    colours, else grey."""
    visual = mesh.visual
    rgb = np.zeros((len(hits.hit), 3))
    texture = _texture_image(visual) if color is None and visual.kind == "texture" else None
    if texture is not None:
        corners = np.asarray(visual.uv, dtype=np.float64)[mesh.faces[hits.face[hits.hit]]]  # (h, 3, 2)
        rgb[hits.hit] = sample_texture(texture, np.einsum("hk,hkc->hc", hits.bary[hits.hit], corners))
    elif color is not None or visual.kind not in ("vertex", "face"):
        rgb[hits.hit] = color if color is not None else DEFAULT_COLOR
    elif visual.kind == "vertex":
        vc = np.asarray(visual.vertex_colors[:, :3], dtype=np.float64) / 255.0
        corners = vc[mesh.faces[hits.face[hits.hit]]]  # (h, 3 corners, 3 channels)
        rgb[hits.hit] = np.einsum("hk,hkc->hc", hits.bary[hits.hit], corners)
    else:
        fc = np.asarray(visual.face_colors[:, :3], dtype=np.float64) / 255.0
        rgb[hits.hit] = fc[hits.face[hits.hit]]
    return rgb


def _shade(albedo: np.ndarray, hits: RayHits, shading: ShadingConfig | None) -> np.ndarray:
    if shading is None:
        return albedo
    light = np.asarray(shading.light_dir, dtype=np.float64)
    light = light / np.linalg.norm(light)
    lambert = np.clip(hits.normal @ light, 0.0, None)
    return np.clip(albedo * (shading.ambient + shading.diffuse * lambert)[:, None], 0.0, 1.0)


def _rays(cams: Cameras) -> tuple[np.ndarray, np.ndarray]:
    origins, dirs = generate_rays(cams)
    return origins.reshape(-1, 3).double().numpy(), dirs.reshape(-1, 3).double().numpy()


def average_subsamples(rgb: np.ndarray, hit: np.ndarray, n: int, h: int, w: int, ss: int) -> np.ndarray:
    """(N, H, W, 4) rgba from ss x ss samples per pixel: alpha = covered fraction, rgb = mean over
    covered samples (straight colour, so edges do not darken towards the background)."""
    cover = hit.astype(np.float64).reshape(n, h, ss, w, ss)
    count = cover.sum(axis=(2, 4))[..., None]
    premult = (rgb.reshape(n, h, ss, w, ss, 3) * cover[..., None]).sum(axis=(2, 4))
    rgb_out = np.divide(premult, count, out=np.zeros_like(premult), where=count > 0)
    return np.concatenate([rgb_out, count / ss**2], axis=-1)


def render_mesh(mesh: trimesh.Trimesh, cams: Cameras, *, shading: ShadingConfig | None = None,
                color: tuple[float, float, float] | None = None, ss: int = 1) -> MeshRender:
    """Render `mesh` from every camera in one ray-cast call per sampling rate.

    shading=None gives the exact (unlit) surface colours. `color` overrides the mesh's own colours
    with one RGB in [0, 1]. ss > 1 antialiases rgba by averaging ss x ss sub-pixel samples; the
    default ss = 1 keeps the mask exactly the projection of the mesh at pixel centres.
    """
    if ss < 1:
        raise ValueError(f"ss must be >= 1, got {ss}")
    n, h, w = len(cams), cams.height, cams.width
    caster = RayCaster(mesh)
    origins, dirs = _rays(cams)
    hits = caster.cast(origins, dirs)
    fine = hits if ss == 1 else caster.cast(*_rays(cams.resized(w * ss, h * ss)))
    rgba = average_subsamples(_shade(surface_colors(mesh, fine, color), fine, shading), fine.hit, n, h, w, ss)
    forward = -cams.c2w[:, :3, 2].double().numpy()  # camera -z axis in world space
    cos_forward = np.einsum("nrc,nc->nr", dirs.reshape(n, h * w, 3), forward).reshape(-1)
    return MeshRender(
        rgba=torch.from_numpy(rgba.astype(np.float32)),
        depth=torch.from_numpy((hits.t * cos_forward).reshape(n, h, w).astype(np.float32)),
        normals=torch.from_numpy(hits.normal.reshape(n, h, w, 3).astype(np.float32)),
        face_ids=torch.from_numpy(hits.face.reshape(n, h, w)),
    )
