"""Animated ShapeWorld: one object with one motion over a clip, its captions and its mesh at any time.

Clip time t runs over [0, 1]. A motion is a rigid transform plus a uniform scale of the object
(bounce, slide, spin, grow, shrink) or, for the snowman, an articulation (its carrot nose turns
with its head). Objects are drawn at `ANIMATED_SCALE` of their static size so every motion stays
inside [-0.8, 0.8]^3 and the ShapeWorld cameras' view. The ground truth of a caption at time t
is `mesh_at(spec, t)`; its centre trajectory is `centre_at`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import trimesh

from gen3d.errors import UserError
from gen3d.shapeworld.captions import parse_caption
from gen3d.shapeworld.scenes import SPLITS, sample_cameras
from gen3d.shapeworld.shapes import build_mesh, unit_mesh
from gen3d.shapeworld.spec import (
    COLOURS,
    HELD_OUT,
    PALETTE,
    SHAPES,
    SIZES,
    SceneSpec,
    validate,
)

MOTIONS = ("bounce", "slide", "spin", "grow", "shrink", "turn")
ARTICULATED = {"turn": "snowman"}  # motions only one shape has
ANIMATED_SCALE = 0.65
REST_Z = -0.12  # the object rests a little low so a bounce stays in view
BOUNCE_HEIGHT = 0.3
SLIDE_HALF_RANGE = 0.25  # along world +x
SPIN_TURN = np.pi / 2  # yaw over the clip (a quarter turn: a cube shows it, round shapes do not)
GROW_RANGE = (0.6, 1.0)  # relative scale at t = 0 and t = 1 (shrink runs it backwards)
HEAD_TURN_DEG = (-60.0, 60.0)

# Phrasings per motion, appended to a base clause ("a red sphere" + " bouncing").
_MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "bounce": ("bouncing", "bouncing up and down", "that bounces"),
    "slide": ("sliding to the right", "moving to the right", "that slides to the right"),
    "spin": ("spinning", "spinning around", "that spins"),
    "grow": ("growing", "getting bigger", "that grows"),
    "shrink": ("shrinking", "getting smaller", "that shrinks"),
    "turn": ("turning its head", "that turns its head", "looking around"),
}
_MOTION_WORDS = (  # checked in order: the first match names the motion
    ("turn", r"\bhead\b|\blooking around\b"),
    ("bounce", r"\bbounc"),
    ("slide", r"\bslid|\bmoving to the right\b"),
    ("spin", r"\bspin"),
    ("grow", r"\bgrow|\bbigger\b"),
    ("shrink", r"\bshrink|\bsmaller\b"),
)
_BASE_TEMPLATES = ("a {size} {colour} {shape}", "a {colour} {shape}", "{size} {colour} {shape}", "the {colour} {shape}")


@dataclass(frozen=True)
class AnimatedSpec:
    """A single-part object and its motion."""

    spec: SceneSpec
    motion: str

    def to_json(self) -> str:
        import json

        return json.dumps({"spec": self.spec.to_json(), "motion": self.motion}, sort_keys=True)


def validate_animated(anim: AnimatedSpec) -> AnimatedSpec:
    validate(anim.spec)
    if anim.spec.top is not None:
        raise UserError("animated ShapeWorld objects have one part; drop the 'with a ... on top' clause")
    if anim.motion not in MOTIONS:
        raise UserError(f"motion must be one of {list(MOTIONS)}, got {anim.motion!r}")
    only = ARTICULATED.get(anim.motion)
    if only is not None and anim.spec.shape != only:
        raise UserError(f"motion '{anim.motion}' needs a {only}, got a {anim.spec.shape}")
    return anim


def motions_for(shape: str) -> tuple[str, ...]:
    return tuple(m for m in MOTIONS if ARTICULATED.get(m, shape) == shape)


# ---- captions ------------------------------------------------------------------------------

def _with_articles(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def animated_captions(anim: AnimatedSpec) -> list[str]:
    """Every phrasing of an animated spec in a fixed order (base templates x motion phrases)."""
    validate_animated(anim)
    s = anim.spec
    bases = [t.format(size=s.size, colour=s.colour, shape=s.shape) for t in _BASE_TEMPLATES]
    return [_with_articles(f"{b} {m}") for b in bases for m in _MOTION_PHRASES[anim.motion]]


def parse_motion(text: str) -> str:
    """The motion a caption names, or a UserError listing the motion words."""
    lowered = text.lower()
    for motion, pattern in _MOTION_WORDS:
        if re.search(pattern, lowered):
            return motion
    words = ", ".join(p[0] for p in _MOTION_PHRASES.values())
    raise UserError(f"caption '{text}' names no ShapeWorld motion (for example: {words})")


def parse_animated_caption(text: str) -> AnimatedSpec:
    """The animated spec of a caption (size None when the caption has no size word)."""
    motion = parse_motion(text)
    base = text
    for phrase in sorted({p for ps in _MOTION_PHRASES.values() for p in ps}, key=len, reverse=True):
        base = re.sub(rf"\b{phrase}\b", "", base, flags=re.IGNORECASE)
    return validate_animated(AnimatedSpec(parse_caption(base), motion))


# ---- sampling ------------------------------------------------------------------------------

_TRAIN = tuple((s, c) for s in SHAPES for c in COLOURS if (s, c) not in HELD_OUT)
_HELD = tuple(sorted(HELD_OUT))


def sample_animated_spec(rng: np.random.Generator, split: str = "train") -> AnimatedSpec:
    """Train never shows a held-out (shape, colour) pair; 'heldout' always does (any motion)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pairs = _HELD if split == "heldout" else _TRAIN
    shape, colour = pairs[rng.integers(len(pairs))]
    size = tuple(SIZES)[rng.integers(len(SIZES))]
    options = motions_for(shape)
    return AnimatedSpec(SceneSpec(shape, colour, size), options[rng.integers(len(options))])


@dataclass(frozen=True)
class AnimatedScene:
    anim: AnimatedSpec
    cameras: object  # Cameras, C of them, shared by every time
    times: np.ndarray  # (T,) clip times in [0, 1]
    captions: list[str]


def sample_animated_scene(seed: int, index: int, cameras: int, times: int, image_size: int,
                          split: str = "train", captions: int = 2) -> AnimatedScene:
    """Scene `index` of (seed, split): C random cameras x T random times (first 0, last 1)."""
    spec_rng, camera_rng, time_rng, caption_rng = np.random.default_rng([seed, 100 + SPLITS.index(split), index]).spawn(4)
    anim = sample_animated_spec(spec_rng, split)
    inner = np.sort(time_rng.uniform(0.0, 1.0, size=max(times - 2, 0)))
    clip = np.concatenate([[0.0], inner, [1.0]])[:times]
    options = animated_captions(anim)
    chosen = [options[i] for i in caption_rng.choice(len(options), size=captions, replace=False)]
    return AnimatedScene(anim, sample_cameras(camera_rng, cameras, image_size), clip, chosen)


# ---- geometry over time ----------------------------------------------------------------------

def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def motion_transform(motion: str, t: float) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation 3x3, translation) of the whole object at time t."""
    scale, rotation, offset = 1.0, np.eye(3), np.array([0.0, 0.0, REST_Z])
    if motion == "bounce":
        offset[2] += BOUNCE_HEIGHT * abs(np.sin(2 * np.pi * t))
    elif motion == "slide":
        offset[0] += SLIDE_HALF_RANGE * (2 * t - 1)
    elif motion == "spin":
        rotation = _rot_z(SPIN_TURN * t)
    elif motion in ("grow", "shrink"):
        lo, hi = GROW_RANGE
        scale = lo + (hi - lo) * (t if motion == "grow" else 1 - t)
    return scale, rotation, offset


def pose_at(motion: str, t: float) -> np.ndarray:
    """The object's pose at time t relative to the static ShapeWorld object of the same spec, as
    (offset x, y, z, yaw, log scale): what the 4D prior's motion head learns to predict."""
    scale, rotation, offset = motion_transform(motion, t)
    yaw = float(np.arctan2(rotation[1, 0], rotation[0, 0]))
    return np.array([*offset, yaw, np.log(ANIMATED_SCALE * scale)])


def nose_colour(body: str) -> str:
    return "red" if body == "orange" else "orange"


@lru_cache(maxsize=64)
def _rest_parts(spec_json: str) -> tuple[trimesh.Trimesh, trimesh.Trimesh | None]:
    """The object at rest (animated scale, origin-centred) and, for a snowman, its nose along +x."""
    spec = SceneSpec.from_json(spec_json)
    body = build_mesh(spec)
    body.apply_scale(ANIMATED_SCALE)
    return body, (_nose(body, spec) if spec.shape == "snowman" else None)


def _head(body_vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and radius of the snowman's head (its top sphere) from the body's vertices."""
    top, bottom = body_vertices[:, 2].max(), body_vertices[:, 2].min()
    radius = 0.25 / (1.07 + 0.25 + 0.5) * (top - bottom)  # head radius / snowman height (shapes.py)
    return np.array([0.0, 0.0, top - radius]), radius


def _nose(body: trimesh.Trimesh, spec: SceneSpec) -> trimesh.Trimesh:
    centre, radius = _head(np.asarray(body.vertices))
    cone = unit_mesh("cone")  # apex along +z, fits the unit ball
    cone.apply_scale(radius * 0.9)
    cone.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))  # apex to +x
    cone.apply_translation(centre + [radius * 1.15, 0.0, 0.0])
    cone.visual.face_colors = np.tile([*PALETTE[nose_colour(spec.colour)], 255], (len(cone.faces), 1)).astype(np.uint8)
    return cone


def mesh_at(anim: AnimatedSpec, t: float) -> trimesh.Trimesh:
    """The ground-truth mesh (per-face colours) at clip time t."""
    validate_animated(anim)
    if anim.spec.size is None:
        raise ValueError("an animated spec needs a size word to have a geometry")
    body, nose = _rest_parts(anim.spec.to_json())
    parts = [np.asarray(body.vertices)]
    if nose is not None:
        nose_vertices = np.asarray(nose.vertices)
        if anim.motion == "turn":
            centre, _ = _head(parts[0])
            lo, hi = np.radians(HEAD_TURN_DEG)
            nose_vertices = (nose_vertices - centre) @ _rot_z(lo + (hi - lo) * t).T + centre
        parts.append(nose_vertices)
    scale, rotation, offset = motion_transform(anim.motion, t)
    vertices = scale * np.concatenate(parts) @ rotation.T + offset
    meshes = [body] if nose is None else [body, nose]
    faces = np.concatenate([m.faces + sum(len(p.vertices) for p in meshes[:i]) for i, m in enumerate(meshes)])
    colours = np.concatenate([m.visual.face_colors for m in meshes])
    return trimesh.Trimesh(vertices, faces, face_colors=colours, process=False)


def centre_at(anim: AnimatedSpec, t: float) -> np.ndarray:
    """The centre of the object's bounding box at time t (the trajectory the benchmark scores)."""
    vertices = np.asarray(mesh_at(anim, t).vertices)
    return (vertices.min(0) + vertices.max(0)) / 2
