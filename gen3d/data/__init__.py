"""Posed image collections: read the common scene formats into one `Scene`, pick views, write nerfstudio."""

from gen3d.data.readers import load_scene
from gen3d.data.scene import Scene, SceneType, Split, is_capture
from gen3d.data.views import select_views
from gen3d.data.writer import write_nerfstudio

__all__ = ["Scene", "SceneType", "Split", "is_capture", "load_scene", "select_views", "write_nerfstudio"]
