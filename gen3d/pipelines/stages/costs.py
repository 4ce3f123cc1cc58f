"""Measured CPU costs behind the estimated seconds per stage that every job prints and records.

Measured with text-to-3d's default config on the 2-core dev machine while other jobs shared it
(one torch thread: faster there than two); re-measure when the prior or the engine changes.
Estimates read no files, so they never load a prior: `PRIOR_SET_SIZE` stands for its set size.
"""

from __future__ import annotations

# export: marching cubes + cleaning, mesh turntable frames
SECONDS_PER_GRID_POINT = 3e-7
SECONDS_PER_TURNTABLE_PIXEL = 6e-6
MESH_CLEAN_SECONDS = 2.0  # cleaning and decimating the marching-cubes mesh to export.target_faces
THRESHOLD_CANDIDATES = 9  # marching cubes + silhouettes per candidate level of export.auto_threshold
SECONDS_PER_CANDIDATE_POINT = 2e-8  # per grid point: one candidate's marching cubes and silhouettes
SECONDS_PER_TEXTURED_FACE = 1.5e-4  # xatlas charting and packing, texel colours from the field
# objects coloured from their views: atlases sized to the 128 px views hold more texels per face,
# and each texel is projected into every view (measured: 7.3 CPU s for a 15k-face cube)
SECONDS_PER_VIEW_COLOURED_FACE = 2e-4
SECONDS_PER_RENDER_PIXEL = 3e-5  # field renders: the evaluation orbit, the generated views exports are scored on
GENERATED_VIEW_SIZE = 128  # pixels across the bundled prior's generated views (its output_size)
SECONDS_PER_SCORED_PIXEL = 1e-6  # per candidate level and pixel of the scored views: its silhouette (fern)

PRIOR_LOAD_SECONDS = 3.0
PRIOR_SET_SIZE = 4  # views per set of the bundled priors
SECONDS_PER_VIEW_STEP = 0.025  # one sampler step for one generated view (CFG: two network rows)
SECONDS_PER_FIT_RAY = 1.2e-4
SECONDS_PER_DISTILL_PIXEL = 8.2e-5  # one rendered pixel per score-distillation step (render + backward)
SECONDS_PER_DISTILL_VIEW = 0.0375  # one view through encode + guided denoiser per score-distillation step
VSD_LORA_FACTOR = 1.0  # VSD's LoRA update per step, relative to the guided prior call


def estimate_views_seconds(views: int, steps: int) -> float:
    """Loading the prior and sampling `views` generated views in `steps` sampler steps."""
    return PRIOR_LOAD_SECONDS + views * steps * SECONDS_PER_VIEW_STEP


def estimate_fit_seconds(recon) -> float:
    """The engine's fit on generated views (`recon`: a ReconConfig)."""
    return recon.steps * recon.batch_rays * SECONDS_PER_FIT_RAY


def distill_step_seconds(render_size: int, vsd: bool = False) -> float:
    """One score-distillation step over one set of the prior's views rendered at `render_size`."""
    return PRIOR_SET_SIZE * (render_size**2 * SECONDS_PER_DISTILL_PIXEL
                             + SECONDS_PER_DISTILL_VIEW * (1 + (VSD_LORA_FACTOR if vsd else 0)))


def estimate_distill_seconds(steps: int, render_size: int, vsd: bool = False) -> float:
    """Loading the prior and `steps` distillation steps."""
    return PRIOR_LOAD_SECONDS + steps * distill_step_seconds(render_size, vsd)


def estimate_export_seconds(export, scored_pixels: int = 0) -> float:
    """Marching cubes (with the level search of `auto_threshold`, whose silhouettes cover the
    `scored_pixels` of the scored views), the texture, and the turntable of `export` (an ExportConfig)."""
    search = THRESHOLD_CANDIDATES * SECONDS_PER_CANDIDATE_POINT if export.auto_threshold else 0.0
    silhouettes = THRESHOLD_CANDIDATES * scored_pixels * SECONDS_PER_SCORED_PIXEL if export.auto_threshold else 0.0
    return (silhouettes + export.resolution**3 * (SECONDS_PER_GRID_POINT + search)
            + (export.target_faces * SECONDS_PER_TEXTURED_FACE if export.texture else 0.0)
            + export.turntable_frames * export.turntable_size**2 * SECONDS_PER_TURNTABLE_PIXEL)


def estimate_object_export_seconds(export, render_size: int, scored_views: int = 0) -> float:
    """`export_field` plus cleaning, the field's renders of the `scored_views` generated views the
    mesh is scored on and matched to, and the 8 evaluation-orbit renders of `save_renders`."""
    scored_pixels = scored_views * GENERATED_VIEW_SIZE**2
    view_colours = (export.target_faces * SECONDS_PER_VIEW_COLOURED_FACE
                    if scored_views and export.texture and export.colors == "views" else 0.0)
    return (estimate_export_seconds(export, scored_pixels) + MESH_CLEAN_SECONDS + view_colours
            + (8 * render_size**2 + scored_pixels) * SECONDS_PER_RENDER_PIXEL)
