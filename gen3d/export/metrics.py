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


def bounding_sphere_radius(mesh: trimesh.Trimesh) -> float:
    """Radius of the smallest sphere enclosing the mesh."""
    _, radius = trimesh.nsphere.minimum_nsphere(mesh)
    return float(radius)


def sample_surface(mesh: trimesh.Trimesh, n: int, seed: int) -> np.ndarray:
    """(n, 3) points uniform over the surface area, reproducible for a seed."""
    if len(mesh.faces) == 0:
        raise ValueError("cannot sample the surface of a mesh with no faces")
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=np.random.default_rng(seed))
    return np.asarray(points, dtype=np.float64)


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
