"""From a density field to deliverable files: marching cubes, cleaning, writers, turntables, metrics."""

from gen3d.export.clean import clean_mesh
from gen3d.export.extract import extract_mesh
from gen3d.export.metrics import chamfer_distance, mask_iou, mesh_report
from gen3d.export.video import render_turntable, write_gif, write_video
from gen3d.export.writers import write_glb, write_mesh, write_obj, write_ply, write_pointcloud_ply, write_textured_glb

__all__ = ["chamfer_distance", "clean_mesh", "extract_mesh", "mask_iou", "mesh_report", "render_turntable",
           "write_gif", "write_glb", "write_mesh", "write_obj", "write_ply", "write_pointcloud_ply",
           "write_textured_glb", "write_video"]
