"""Captions: several phrasings of a spec, and parsing a caption back to its spec.

Several phrasings per spec keep the text prior from keying on one sentence pattern; parsing
is what evaluation uses to recover the ground truth of a prompt.
"""

from __future__ import annotations

import re

import numpy as np

from gen3d.errors import UserError
from gen3d.shapeworld.spec import COLOURS, SHAPES, SIZES, TOP_SHAPES, Part, SceneSpec, is_held_out, validate

# Base clauses; the ones without {size} leave the size unsaid.
_BASE_TEMPLATES = (
    "a {size} {colour} {shape}",
    "a {colour} {shape}",
    "{colour} {shape}",
    "a {shape} that is {colour}",
    "a {size} {shape} that is {colour}",
    "{size} {colour} {shape}",
    "a 3d model of a {size} {colour} {shape}",
)
_TOP_TEMPLATES = (" with a {colour} {shape} on top", ", topped with a {colour} {shape}")
_TOP_SPLIT = re.compile(r",?\s+(?:with|topped with)\s+an?\s+")


def _with_articles(text: str) -> str:
    """'a orange' -> 'an orange' (articles agree with the following word)."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def captions_for(spec: SceneSpec) -> list[str]:
    """Every phrasing of `spec`, in a fixed order (base templates x second-part templates)."""
    validate(spec)
    bases = [t.format(size=spec.size, colour=spec.colour, shape=spec.shape) for t in _BASE_TEMPLATES]
    if spec.top is None:
        return [_with_articles(b) for b in bases]
    tops = [t.format(colour=spec.top.colour, shape=spec.top.shape) for t in _TOP_TEMPLATES]
    return [_with_articles(b + t) for b in bases for t in tops]


def sample_captions(spec: SceneSpec, rng: np.random.Generator, count: int = 1) -> list[str]:
    """`count` distinct phrasings of `spec` chosen by `rng`."""
    options = captions_for(spec)
    if count > len(options):
        raise ValueError(f"asked for {count} phrasings, a spec has {len(options)}")
    return [options[i] for i in rng.choice(len(options), size=count, replace=False)]


def _find(words: list[str], vocabulary, clause: str, what: str, required: bool = True) -> str | None:
    found = [w for w in words if w in vocabulary]
    if len(found) > 1:
        raise UserError(f"caption clause '{clause}' names several {what}s: {found}")
    if not found and required:
        raise UserError(f"caption clause '{clause}' names no ShapeWorld {what} (one of {list(vocabulary)})")
    return found[0] if found else None


def parse_caption(text: str) -> SceneSpec:
    """The spec a caption describes; `size` is None when the caption has no size word.

    The base object is described before 'with a' / 'topped with a', the second part after it.
    """
    clauses = _TOP_SPLIT.split(text.strip().lower().rstrip("."), maxsplit=1)
    words = [re.findall(r"[a-z0-9]+", c) for c in clauses]
    base = clauses[0]
    spec_top = None
    if len(clauses) == 2:
        spec_top = Part(_find(words[1], TOP_SHAPES, clauses[1], "shape"),
                        _find(words[1], COLOURS, clauses[1], "colour"))
    return SceneSpec(
        shape=_find(words[0], SHAPES, base, "shape"),
        colour=_find(words[0], COLOURS, base, "colour"),
        size=_find(words[0], SIZES, base, "size", required=False),
        top=spec_top,
    )


def caption_is_held_out(text: str) -> bool:
    """Whether a caption describes a held-out (shape, colour) pair in any of its parts."""
    return is_held_out(parse_caption(text))
