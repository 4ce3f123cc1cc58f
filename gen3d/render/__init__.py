"""Rendering of triangle meshes (ray casting); see `gen3d.render.mesh`."""

from gen3d.render.mesh import MeshRender, RayCaster, RayHits, ShadingConfig, render_mesh, surface_colors

__all__ = ["MeshRender", "RayCaster", "RayHits", "ShadingConfig", "render_mesh", "surface_colors"]
