"""The fit stage: the reconstruction engine trained on saved views, checkpointed and resumable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gen3d.config import ranged
from gen3d.recon import ReconConfig, ReconTrainer
from gen3d.runs import StageContext

TrainerFactory = Callable[[StageContext, int], ReconTrainer]  # (ctx, seed) -> the job's engine on its views


@dataclass
class FitConfig:
    checkpoint_every: int = ranged(100, low=1)
    log_every: int = ranged(25, low=1)


def object_recon_config() -> ReconConfig:
    """The engine for generated views of one object in ShapeWorld's framing: white background,
    view-independent colour, mask loss on alpha, random backgrounds while training."""
    recon = ReconConfig(steps=150, batch_rays=1024, mask_loss_weight=1.0)
    recon.field.view_dependent = False
    recon.field.encoding.kind = "hash"
    recon.field.encoding.hash.levels = 8
    recon.field.encoding.hash.log2_table = 14
    recon.field.encoding.hash.max_resolution = 64  # finer detail is where generated views disagree
    recon.render.aabb = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    recon.render.near, recon.render.far = 1.0, 4.0
    recon.render.step_size = 0.04
    recon.render.background = "random"
    recon.render.occupancy.resolution = 32
    recon.render.occupancy.warmup_steps = 32
    recon.optim.lr = 0.02
    return recon


def fit_views(ctx: StageContext, make_trainer: TrainerFactory) -> None:
    """The fit stage of generate-then-reconstruct jobs: train on the saved views, checkpointed
    and resumable; `make_trainer(ctx, seed)` builds the job's trainer (its views and weights)."""
    cfg = ctx.config
    trainer = make_trainer(ctx, ctx.stage_seed)
    train_checkpointed(ctx, trainer, cfg.recon.steps, cfg.fit.checkpoint_every, cfg.fit.log_every)
    ctx.shared["model"] = (trainer.field, trainer.renderer)


def train_checkpointed(ctx: StageContext, trainer: ReconTrainer, total: int, checkpoint_every: int,
                       log_every: int, step: Callable[[], dict[str, float]] | None = None) -> None:
    """Run `total` training steps as the stage's resumable loop, logging loss, training PSNR and any
    other stats, and record the stage's final checkpoint as an artifact. `step` (default
    `trainer.step`) may do more than the trainer's step, as long as all its state is the trainer's."""
    step = step or trainer.step
    for index in ctx.steps(total, every=checkpoint_every, state=trainer.state_dict,
                           restore=trainer.load_state_dict):
        stats = step()
        if (index + 1) % log_every == 0 or index + 1 == total:
            extra = {k: v for k, v in stats.items() if k not in ("loss", "psnr")}
            ctx.event(index + 1, total, loss=stats["loss"], train_psnr=stats["psnr"], **extra)
    ctx.add_artifact(ctx.run.checkpoint_path(ctx.stage), "checkpoint")
