"""ShapeWorld: a procedural world of captioned single objects with exact ground truth.

Every scene is one object (optionally with a second part on top) described by a `SceneSpec`;
its mesh, captions and renders are pure functions of the spec and a seed, which is what lets
the bundled multi-view prior be trained and evaluated without any downloaded data.
"""

from gen3d.shapeworld.spec import COLOURS, HELD_OUT, PALETTE, SHAPES, SIZES, Part, SceneSpec, is_held_out

__all__ = ["COLOURS", "HELD_OUT", "PALETTE", "SHAPES", "SIZES", "Part", "SceneSpec", "is_held_out"]
