"""Ground-truth meshes: canonical primitives and composites, and the mesh of a scene spec.

Canonical placement makes a spec's geometry unique: every shape is upright (z up) with a fixed
yaw (cube faces on the axes), its bounding box centred at the origin and its farthest vertex
at distance 1; a spec scales that by its size word.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import trimesh

from gen3d.shapeworld.spec import PALETTE, SIZES, SceneSpec, validate

_SECTIONS = 48  # around the z axis: smooth silhouettes at 64-256 px
TOP_SCALE = 0.5  # a second part's size relative to the base before the pair is renormalised


def _revolve(profile: np.ndarray) -> trimesh.Trimesh:
    """Surface of revolution about z of a (radius, z) profile running from axis to axis."""
    return trimesh.creation.revolve(profile, sections=_SECTIONS)


def _arc(centre_z: float, radius: float, phi_from: float, phi_to: float, count: int) -> np.ndarray:
    """Points of a circle's (radius, z) profile; phi = 0 at its bottom pole, pi at its top."""
    phi = np.linspace(phi_from, phi_to, count)
    return np.stack([radius * np.sin(phi), centre_z - radius * np.cos(phi)], axis=1)


def _stacked_spheres(spheres: list[tuple[float, float]]) -> trimesh.Trimesh:
    """One watertight surface for overlapping spheres (centre z, radius) stacked along z.

    The outline of their union is walked bottom to top, switching circles where neighbours
    intersect, so no hidden inner surfaces end up in the ground truth.
    """
    phis = [0.0]
    for (z1, r1), (z2, r2) in zip(spheres, spheres[1:]):
        h = (r1**2 - r2**2 + z2**2 - z1**2) / (2 * (z2 - z1))  # height of the intersection circle
        phis += [np.arccos((z1 - h) / r1), np.arccos((z2 - h) / r2)]
    phis.append(np.pi)
    arcs = [_arc(z, r, phis[2 * k], phis[2 * k + 1], 24) for k, (z, r) in enumerate(spheres)]
    profile = np.concatenate([arcs[0]] + [a[1:] for a in arcs[1:]])
    profile[[0, -1], 0] = 0.0  # poles exactly on the axis
    return _revolve(profile)


def _mushroom() -> trimesh.Trimesh:
    """Cylindrical stem under a dome cap, revolved from one profile (watertight)."""
    stem_r, stem_h, cap_r, cap_h = 0.16, 0.45, 0.5, 0.38
    cap = np.stack([cap_r * np.cos(t := np.linspace(0, np.pi / 2, 24)), stem_h + cap_h * np.sin(t)], 1)
    profile = np.concatenate([[[0.0, 0.0], [stem_r, 0.0], [stem_r, stem_h]], cap])
    profile[-1, 0] = 0.0
    return _revolve(profile)


_BUILDERS = {
    "sphere": lambda: trimesh.creation.icosphere(subdivisions=3),
    "cube": lambda: trimesh.creation.box(extents=(1.0, 1.0, 1.0)),
    "cylinder": lambda: trimesh.creation.cylinder(radius=0.5, height=1.0, sections=_SECTIONS),
    "cone": lambda: trimesh.creation.cone(radius=0.5, height=1.0, sections=_SECTIONS),
    "torus": lambda: trimesh.creation.torus(0.5, 0.2, major_sections=_SECTIONS, minor_sections=24),
    "capsule": lambda: trimesh.creation.capsule(height=0.8, radius=0.3, count=[_SECTIONS, 24]),
    "mushroom": _mushroom,
    "snowman": lambda: _stacked_spheres([(0.0, 0.5), (0.62, 0.36), (1.07, 0.25)]),
}


def _normalise(vertices: np.ndarray) -> np.ndarray:
    """Centre the bounding box at the origin and scale the farthest vertex to distance 1."""
    centred = vertices - (vertices.min(0) + vertices.max(0)) / 2
    return centred / np.linalg.norm(centred, axis=1).max()


@lru_cache(maxsize=None)
def _unit_arrays(shape: str) -> tuple[np.ndarray, np.ndarray]:
    mesh = _BUILDERS[shape]()
    vertices, faces = _normalise(np.asarray(mesh.vertices, dtype=np.float64)), np.asarray(mesh.faces, dtype=np.int64)
    vertices.flags.writeable = faces.flags.writeable = False  # shared by every caller
    return vertices, faces


def unit_mesh(shape: str) -> trimesh.Trimesh:
    """The canonical mesh of one shape (fits the unit ball), uncoloured."""
    vertices, faces = _unit_arrays(shape)
    return trimesh.Trimesh(vertices.copy(), faces.copy(), process=False)


def build_mesh(spec: SceneSpec) -> trimesh.Trimesh:
    """The ground-truth mesh of a spec, with per-face palette colours (RGBA uint8).

    A second part is scaled by TOP_SCALE and rests on the base's bounding box, centred on z;
    the pair is then renormalised as one object, so every spec fits a ball of its size.
    """
    validate(spec)
    if spec.size is None:
        raise ValueError("a spec needs a size word to have a geometry")
    vertices, faces = _unit_arrays(spec.shape)
    parts = [(vertices, faces, spec.colour)]
    if spec.top is not None:
        top_vertices, top_faces = _unit_arrays(spec.top.shape)
        top_vertices = top_vertices * TOP_SCALE
        top_vertices = top_vertices + [0.0, 0.0, vertices[:, 2].max() - top_vertices[:, 2].min()]
        parts.append((top_vertices, top_faces, spec.top.colour))
    offsets = np.cumsum([0] + [len(v) for v, _, _ in parts[:-1]])
    all_vertices = _normalise(np.concatenate([v for v, _, _ in parts])) * SIZES[spec.size]
    all_faces = np.concatenate([f + o for (_, f, _), o in zip(parts, offsets)])
    colours = np.concatenate([np.tile([*PALETTE[c], 255], (len(f), 1)) for _, f, c in parts]).astype(np.uint8)
    return trimesh.Trimesh(all_vertices, all_faces, face_colors=colours, process=False)

