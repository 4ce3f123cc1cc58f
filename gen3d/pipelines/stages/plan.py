"""The stage list of single-object jobs (text-to-3d, image-to-3d) and the estimates of its stages."""

from __future__ import annotations

from collections.abc import Callable

from gen3d.pipelines.stages.costs import (
    estimate_distill_seconds,
    estimate_fit_seconds,
    estimate_object_export_seconds,
    estimate_views_seconds,
)
from gen3d.pipelines.stages.distill import DISTILL_METHODS
from gen3d.runs import Job, Stage, StageContext

StageFn = Callable[[StageContext], None]


def estimate_views(job: Job) -> float:
    views = job.config.views
    return estimate_views_seconds(sum(views.passes), views.steps)


def estimate_distill(job: Job) -> float:
    """The distill stage of a job whose config has `distill` and `method` (sds or vsd)."""
    d = job.config.distill
    return estimate_distill_seconds(d.steps, d.render_size, vsd=job.config.method == "vsd")


def estimate_export(job: Job) -> float:
    """Objects fitted to generated views are scored on (and coloured from) them; distilled ones have none."""
    scored = 0 if job.config.method in DISTILL_METHODS else sum(job.config.views.passes)
    return estimate_object_export_seconds(job.config.export, job.config.render_size, scored)


def object_stages(method: str, views: StageFn, fit: StageFn, distill: StageFn, export: StageFn) -> list[Stage]:
    """views -> fit -> export, or distill -> export for the score-distillation methods."""
    if method in DISTILL_METHODS:
        stages = [Stage("distill", distill, estimate_distill)]
    else:
        stages = [Stage("views", views, estimate_views),
                  Stage("fit", fit, lambda job: estimate_fit_seconds(job.config.recon))]
    return stages + [Stage("export", export, estimate_export)]
