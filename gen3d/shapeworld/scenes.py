"""Sampling scenes (spec, cameras, captions) from a seed, and the ShapeWorld camera rig.

Scene `index` of a dataset with `seed` draws from its own generators, so any sample can be
regenerated alone, in any order, by any number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gen3d.cameras import Cameras, orbit, turntable
from gen3d.shapeworld.captions import sample_captions
from gen3d.shapeworld.spec import COLOURS, HELD_OUT, SHAPES, SIZES, TOP_SHAPES, Part, SceneSpec

RADIUS = 2.5
FOV_Y_DEG = 40.0
ELEVATION_RANGE_DEG = (5.0, 40.0)
NEAR, FAR = 1.0, 4.0
EVAL_ELEVATION_DEG = 15.0
EVAL_VIEWS = 8  # azimuths 0, 45, ..., 315

SPLITS = ("train", "heldout")
TWO_PART_PROBABILITY = 0.3

_TRAIN_BASES = tuple((s, c) for s in SHAPES for c in COLOURS if (s, c) not in HELD_OUT)
_HELD_OUT_BASES = tuple(sorted(HELD_OUT))
_TRAIN_TOPS = tuple((s, c) for s in TOP_SHAPES for c in COLOURS if (s, c) not in HELD_OUT)


@dataclass(frozen=True)
class Scene:
    spec: SceneSpec
    cameras: Cameras
    captions: list[str]


def scene_generators(seed: int, split: str, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for a scene's spec, cameras and captions."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return tuple(np.random.default_rng([seed, SPLITS.index(split), index]).spawn(3))


def sample_spec(rng: np.random.Generator, split: str = "train") -> SceneSpec:
    """A spec of the split: 'train' never contains a held-out pair in any part; 'heldout'
    has a held-out base (and a training pair as its optional second part)."""
    bases = _HELD_OUT_BASES if split == "heldout" else _TRAIN_BASES
    shape, colour = bases[rng.integers(len(bases))]
    size = tuple(SIZES)[rng.integers(len(SIZES))]
    top = None
    if rng.random() < TWO_PART_PROBABILITY:
        top = Part(*_TRAIN_TOPS[rng.integers(len(_TRAIN_TOPS))])
    return SceneSpec(shape, colour, size, top)


def sample_cameras(rng: np.random.Generator, count: int, image_size: int) -> Cameras:
    """Training cameras: elevation uniform in [5, 40] deg, azimuth uniform in [0, 360) deg."""
    elevation = rng.uniform(*ELEVATION_RANGE_DEG, size=count)
    azimuth = rng.uniform(0.0, 360.0, size=count)
    return orbit(elevation, azimuth, RADIUS, FOV_Y_DEG, image_size, image_size)


def eval_cameras(image_size: int) -> Cameras:
    """The evaluation orbit: elevation 15 deg, azimuths 0, 45, ..., 315."""
    return turntable(EVAL_VIEWS, EVAL_ELEVATION_DEG, RADIUS, FOV_Y_DEG, image_size, image_size)


def sample_scene(seed: int, index: int, views: int, image_size: int, split: str = "train",
                 captions: int = 1) -> Scene:
    """Scene `index` of the dataset (`seed`, `split`), independent of every other index."""
    spec_rng, camera_rng, caption_rng = scene_generators(seed, split, index)
    spec = sample_spec(spec_rng, split)
    return Scene(spec, sample_cameras(camera_rng, views, image_size), sample_captions(spec, caption_rng, captions))
