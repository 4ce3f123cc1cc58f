"""The ShapeWorld vocabulary, scene specs and the fixed held-out split.

A spec names everything that determines the geometry and colours of a scene, so a caption
(which is just a phrasing of a spec) has exactly one ground truth up to its size word.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from gen3d.errors import UserError

PRIMITIVES = ("sphere", "cube", "cylinder", "cone", "torus", "capsule")
COMPOSITES = ("mushroom", "snowman")
SHAPES = PRIMITIVES + COMPOSITES
# Second parts are primitives only, so "a X with a Y on top" never nests composites.
TOP_SHAPES = PRIMITIVES

# sRGB albedos, far apart in hue so they stay distinguishable after Lambert shading (which
# only scales an albedo's brightness).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 30),
    "green": (50, 170, 60),
    "cyan": (30, 200, 210),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (240, 120, 190),
}
COLOURS = tuple(PALETTE)

# Scale of the canonical object (which fits the unit ball): large objects fit a ball of radius
# 0.8, inside both [-0.8, 0.8]^3 and the view cone of the ShapeWorld cameras.
SIZES: dict[str, float] = {"small": 0.55, "large": 0.8}

# (shape, colour) pairs training never sees, not even as a second part: each shape and each
# colour appears exactly once, so held-out evaluation covers the whole vocabulary.
HELD_OUT: frozenset[tuple[str, str]] = frozenset({
    ("sphere", "purple"),
    ("cube", "green"),
    ("cylinder", "red"),
    ("cone", "cyan"),
    ("torus", "yellow"),
    ("capsule", "pink"),
    ("mushroom", "blue"),
    ("snowman", "orange"),
})


@dataclass(frozen=True)
class Part:
    """One coloured shape."""

    shape: str
    colour: str


@dataclass(frozen=True)
class SceneSpec:
    """One object: a base part of a size, optionally with a second part on top.

    `size` is None only for specs parsed from captions that carry no size word.
    """

    shape: str
    colour: str
    size: str | None
    top: Part | None = None

    @property
    def parts(self) -> tuple[Part, ...]:
        base = Part(self.shape, self.colour)
        return (base,) if self.top is None else (base, self.top)

    def to_json(self) -> str:
        top = None if self.top is None else {"shape": self.top.shape, "colour": self.top.colour}
        return json.dumps({"shape": self.shape, "colour": self.colour, "size": self.size, "top": top},
                          sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "SceneSpec":
        data = json.loads(text)
        top = data.get("top")
        return validate(SceneSpec(data["shape"], data["colour"], data["size"],
                                  None if top is None else Part(top["shape"], top["colour"])))


def validate(spec: SceneSpec) -> SceneSpec:
    """The spec itself, or a UserError naming the first field outside the vocabulary."""
    checks = [("shape", spec.shape, SHAPES), ("colour", spec.colour, COLOURS)]
    if spec.size is not None:
        checks.append(("size", spec.size, tuple(SIZES)))
    if spec.top is not None:
        checks += [("top.shape", spec.top.shape, TOP_SHAPES), ("top.colour", spec.top.colour, COLOURS)]
    for field, value, allowed in checks:
        if value not in allowed:
            raise UserError(f"ShapeWorld spec field '{field}' must be one of {list(allowed)}, got {value!r}")
    return spec


def is_held_out(spec: SceneSpec) -> bool:
    """Whether any part of the spec is a held-out (shape, colour) pair."""
    return any((part.shape, part.colour) in HELD_OUT for part in spec.parts)


def palette_array() -> np.ndarray:
    """The palette as a (C, 3) float array in [0, 1], rows in `COLOURS` order."""
    return np.array([PALETTE[name] for name in COLOURS], dtype=np.float64) / 255.0


def nearest_colour(rgb: np.ndarray) -> list[str]:
    """Palette names nearest to shaded pixels (..., 3) in [0, 1], comparing directions in RGB.

    Lambert + ambient shading under white light multiplies an albedo by one scalar, so the
    direction of a rendered colour (not its brightness) identifies the palette entry.
    """
    flat = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    pixels = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-8)
    palette = palette_array()
    palette /= np.linalg.norm(palette, axis=1, keepdims=True)
    return [COLOURS[i] for i in np.argmax(pixels @ palette.T, axis=1)]
