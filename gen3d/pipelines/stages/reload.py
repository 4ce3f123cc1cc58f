"""A finished stage's model re-loaded from its checkpoint, for a later stage of a resumed run
(which no longer holds it in memory)."""

from __future__ import annotations

from torch import nn

from gen3d.fields.nerf import NerfField
from gen3d.pipelines.stages.distill import DISTILL_METHODS, Distiller, distill_renderer
from gen3d.pipelines.stages.fit import TrainerFactory
from gen3d.render.volume import VolumeRenderer
from gen3d.runs import StageContext


def fitted_model(ctx: StageContext, make_trainer: TrainerFactory) -> tuple[NerfField, VolumeRenderer]:
    """The fit stage's field and renderer, re-loaded from its checkpoint (for a resumed export)."""
    trainer = make_trainer(ctx, 0)
    trainer.load_state_dict(ctx.read_checkpoint("fit").state)
    return trainer.field, trainer.renderer


def distilled_model(ctx: StageContext, distiller_cls: type[Distiller] = Distiller) -> tuple[NerfField, VolumeRenderer]:
    """The distill stage's field and renderer, re-loaded from its checkpoint (for a resumed export);
    `ctx.config` is any config a `distiller_cls` takes."""
    cfg = ctx.config
    field = distiller_cls.build_field(cfg)
    renderer = distill_renderer(cfg)
    nn.ModuleDict({"field": field, "renderer": renderer}).load_state_dict(ctx.read_checkpoint("distill").state["model"])
    return field, renderer


def stage_model(ctx: StageContext, make_trainer: TrainerFactory,
                distiller_cls: type[Distiller] = Distiller) -> tuple[NerfField, VolumeRenderer]:
    """The field and renderer the job's training stage (distill for sds/vsd, else fit) left in
    `ctx.shared`, or re-loaded from its checkpoint when a resumed run starts after it."""
    if "model" not in ctx.shared:
        distilled = ctx.config.method in DISTILL_METHODS
        ctx.shared["model"] = distilled_model(ctx, distiller_cls) if distilled else fitted_model(ctx, make_trainer)
    return ctx.shared["model"]
