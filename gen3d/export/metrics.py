"""Geometry metrics shared by benchmarks, tests and run manifests.

Chamfer distance follows the project convention (docs/CONVENTIONS.md, geometry): 10,000 seeded
surface samples on each mesh, the mean of the two directed mean nearest-neighbour distances,
in units of the ground truth's bounding-sphere radius, so scores compare across object sizes.
Point sampling sets a floor: two independent 10k samplings of the same sphere are ~0.018 apart,
so scores below ~0.02 mean "as close as this metric can tell".
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from gen3d.cameras import Cameras
from gen3d.recon.metrics import psnr
from gen3d.render.mesh import render_mesh


def bounding_sphere_radius(mesh: trimesh.Trimesh) -> float:
    """Radius of the smallest sphere enclosing the mesh."""
    _, radius = trimesh.nsphere.minimum_nsphere(mesh)
    return float(radius)


def _samples_with_normals(mesh: trimesh.Trimesh, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(mesh.faces) == 0:
        raise ValueError("cannot sample the surface of a mesh with no faces")
    points, faces = trimesh.sample.sample_surface(mesh, n, seed=np.random.default_rng(seed))
    return np.asarray(points, dtype=np.float64), np.asarray(mesh.face_normals[faces], dtype=np.float64)


def sample_surface(mesh: trimesh.Trimesh, n: int, seed: int) -> np.ndarray:
    """(n, 3) points uniform over the surface area, reproducible for a seed."""
    return _samples_with_normals(mesh, n, seed)[0]


def chamfer_distance(mesh_pred: trimesh.Trimesh, mesh_gt: trimesh.Trimesh, n: int = 10000, seed: int = 0) -> float:
    """Symmetric Chamfer distance (mean of the two directed means) over the GT bounding-sphere radius.

    Both meshes are sampled with the same seed, so a mesh compared with itself scores exactly 0.
    """
    pred = sample_surface(mesh_pred, n, seed)
    gt = sample_surface(mesh_gt, n, seed)
    pred_to_gt = cKDTree(gt).query(pred)[0].mean()
    gt_to_pred = cKDTree(pred).query(gt)[0].mean()
    return float(0.5 * (pred_to_gt + gt_to_pred) / bounding_sphere_radius(mesh_gt))


def mesh_report(mesh: trimesh.Trimesh) -> dict:
    """Plain-JSON health report: is the mesh one closed, consistently wound, outward-facing surface?"""
    components = trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.arange(len(mesh.faces)))
    watertight = bool(mesh.is_watertight)
    volume = float(mesh.volume) if watertight else None
    return {
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
        "components": len(components),
        "watertight": watertight,
        "winding_consistent": bool(mesh.is_winding_consistent),
        # The signed volume only means something for a closed surface.
        "outward": bool(watertight and volume > 0),
        "volume": volume,
    }


def _as_mask(m, threshold: float) -> torch.Tensor:
    m = m if isinstance(m, torch.Tensor) else torch.from_numpy(np.asarray(m))
    return m if m.dtype == torch.bool else m > threshold


def mask_iou(a, b, threshold: float = 0.5) -> float:
    """Intersection over union of two masks (bool, or float thresholded at `threshold`); 1.0 if both are empty."""
    a, b = _as_mask(a, threshold), _as_mask(b, threshold)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def solid_euler(mesh: trimesh.Trimesh, resolution: int = 96) -> int:
    """Euler characteristic of the solid the mesh encloses, read off a voxelised copy.

    Each connected piece is voxelised on its own and the pieces united, then gaps up to about four
    voxels closed: parts that touch or nearly touch (a second ShapeWorld part resting on the first,
    on a cone's tip or on a curved cap) count as one body, as any reconstruction of them would, and
    faces two parts share (a cylinder standing on a cube) do not confuse the inside test, which
    counts crossings (coincident faces count twice). Before this, "a cube with a cylinder on top"
    had an Euler characteristic of -6554."""
    import open3d as o3d
    from scipy import ndimage
    from skimage.measure import marching_cubes

    lo, hi = mesh.bounds
    pad = (hi - lo).max() * 0.05
    axes = [np.linspace(lo[k] - pad, hi[k] + pad, resolution) for k in range(3)]
    grid = o3d.core.Tensor(np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float32))
    inside = np.zeros((resolution,) * 3, dtype=bool)
    for piece in mesh.split(only_watertight=False):
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(np.asarray(piece.vertices, np.float32)),
                            o3d.core.Tensor(np.asarray(piece.faces, np.uint32)))
        inside |= scene.compute_occupancy(grid).numpy().reshape(inside.shape).astype(bool)
    inside = ndimage.binary_closing(np.pad(inside, 3), iterations=2)
    verts, faces, _, _ = marching_cubes(np.pad(inside.astype(np.float32), 1), level=0.5)
    return int(trimesh.Trimesh(verts, faces, process=True).euler_number)


def surface_metrics(mesh_pred: trimesh.Trimesh, mesh_gt: trimesh.Trimesh, *, n: int = 10000, seed: int = 0,
                    fscore_radius: float = 0.02, gt_euler: int | None = None) -> dict:
    """Chamfer, normal error, F-score and topology of a mesh against the ground truth (conventions).

    Distances are in units of the ground truth's bounding-sphere radius. normal_error_deg: mean
    unsigned angle between each predicted sample's face normal and the face normal of its nearest
    ground-truth sample. fscore: harmonic mean of precision and recall at `fscore_radius`.
    euler_ok: the predicted mesh's Euler characteristic equals the ground-truth solid's
    (`gt_euler`, else `solid_euler(mesh_gt)`).
    """
    radius = bounding_sphere_radius(mesh_gt)
    pred, pred_normals = _samples_with_normals(mesh_pred, n, seed)
    gt, gt_normals = _samples_with_normals(mesh_gt, n, seed)
    to_gt, nearest = cKDTree(gt).query(pred)
    to_pred = cKDTree(pred).query(gt)[0]
    to_gt, to_pred = to_gt / radius, to_pred / radius
    cosine = np.abs(np.einsum("nc,nc->n", pred_normals, gt_normals[nearest])).clip(0.0, 1.0)
    precision, recall = (to_gt < fscore_radius).mean(), (to_pred < fscore_radius).mean()
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    euler = int(mesh_pred.euler_number)
    truth = solid_euler(mesh_gt) if gt_euler is None else gt_euler
    return {"chamfer": float(0.5 * (to_gt.mean() + to_pred.mean())),
            "normal_error_deg": float(np.degrees(np.arccos(cosine)).mean()),
            "fscore": float(fscore), "euler": euler, "euler_gt": truth, "euler_ok": euler == truth}


def mesh_psnr(mesh: trimesh.Trimesh, cameras: Cameras, targets: torch.Tensor,
              background: tuple[float, float, float] = (1.0, 1.0, 1.0), ss: int = 2) -> float:
    """Mean PSNR of the mesh rendered unlit (texture, else vertex colours) at `cameras` and composited
    onto `background`, against `targets` (N, H, W, 3): the fidelity of an exported file to the
    images the field is scored on (conventions: `mesh_psnr`). ss x ss samples per pixel."""
    render = render_mesh(mesh, cameras, ss=ss).composited(tuple(float(c) for c in background))
    return float(psnr(render, targets.detach().float().cpu()).mean())
