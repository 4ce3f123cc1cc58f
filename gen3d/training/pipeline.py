"""The `train` job: the bundled priors' autoencoder, multi-view or 4D model trained on ShapeWorld.

Training is a job in a run folder (manifest, events, log, checkpoints under ckpt/), so an
interrupted training continues with `gen3d train CONFIG --out RUN --resume`. Stages:

* autoencoder: cache (render ShapeWorld) -> autoencoder (train; writes RUN/autoencoder/)
* multiview:   cache -> text (caption embeddings) -> [motion (4D)] -> latents (encode the cache once
  with the trained autoencoder) -> multiview (train on cached latents) -> prior (the shippable
  folder RUN/prior/: fp16 weights, config.json, manifest.json with sha256)
* upsampler:   cache (128 px renders) -> upsampler (train on the prior's decoded views) -> prior
  (the given prior folder with the upsampler added, RUN/prior/)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from gen3d.diffusion.denoiser import Denoiser
from gen3d.diffusion.losses import diffusion_loss
from gen3d.errors import UserError
from gen3d.models import autoencoder as aem
from gen3d.models.motion import train_motion_head
from gen3d.models.multiview import MultiViewDenoiser
from gen3d.models.shapeworld_prior import add_upsampler, export_prior, load_autoencoder, noise_schedule
from gen3d.models.text import TextEncoder
from gen3d.models.upsampler import UpsamplingObjective, ViewUpsampler, upsampling_metrics
from gen3d.runs import Job, RunFolder, Stage, resume_job, run_job
from gen3d.shapeworld.animated import pose_at
from gen3d.training.config import TrainConfig
from gen3d.training.data import (
    as_float,
    cache_images,
    cache_stage,
    latents_stage,
    text_cache,
    text_stage,
    used_captions,
    view_poses,
)
from gen3d.training.distributed import follow_job, init_distributed, rank_and_world, then_barrier
from gen3d.training.latents import LatentSets
from gen3d.training.trainer import Trainer, batch_indices, fit, save_loss_curve

Config = TrainConfig  # the job registry's name for a pipeline's config


def _fit_on_images(ctx, trainer: Trainer, images: np.ndarray, metrics) -> None:
    """Train an image objective (`net(rgba, generator) -> loss`) on cached uint8 views, batches
    drawn from (seed, step); `metrics()` joins every tenth progress event and the last."""
    optim = trainer.cfg
    rank, world = rank_and_world()

    def loss_fn(net, step: int):
        idx = np.sort(batch_indices(len(images), optim.batch, step, ctx.seed, rank, world))
        return net(as_float(images[idx]), ctx.generator)

    def on_log(step: int) -> dict:
        return metrics() if step % (optim.log_every * 10) == 0 or step == optim.steps else {}

    fit(ctx, trainer, loss_fn, on_log)


def _autoencoder_stage(ctx) -> None:
    """Train the decoder. The (fixed) encoder's scaling factor is measured first and the folder
    written at once, so a multi-view run can encode its latents while the decoder trains."""
    cfg: TrainConfig = ctx.config
    tc = cfg.autoencoder
    images = cache_images(cfg).rgba.reshape(-1, cfg.data.size, cfg.data.size, 4)
    rank, _ = rank_and_world()
    eval_images = as_float(images[:tc.eval_images])
    scaling = aem.measure_scaling_factor(aem.build_autoencoder(tc.model), eval_images)

    def build():
        ae = aem.build_autoencoder(tc.model)
        ae.register_to_config(scaling_factor=scaling)
        return aem.ReconstructionObjective(ae, tc.latent_noise, tc.alpha_weight)

    objective = build()
    out = ctx.path / "autoencoder"
    if rank == 0:
        objective.ae.save_pretrained(out)
    trainer = Trainer(objective, tc.optim)
    _fit_on_images(ctx, trainer, images, lambda: aem.reconstruction_metrics(objective.ae.eval(), eval_images[:64]))
    if rank != 0:
        return
    ae = trainer.ema_model(build).ae
    metrics = aem.reconstruction_metrics(ae, eval_images)
    ae.save_pretrained(out)
    ctx.set_metrics(**{f"ae_{k}": round(v, 4) for k, v in metrics.items()}, scaling_factor=scaling)
    ctx.log(f"autoencoder EMA: {metrics}, scaling_factor {scaling:.4f}")
    save_loss_curve(trainer.losses, ctx.path / "loss_autoencoder.png", "autoencoder loss")
    ctx.add_artifact("loss_autoencoder.png", "curve")


def _upsampler_stage(ctx) -> None:
    """Train the per-view upsampler on 128 px renders, from the prior's own decoder's 64 px views."""
    cfg: TrainConfig = ctx.config
    tc = cfg.upsampler
    images = cache_images(cfg).rgba.reshape(-1, cfg.data.size, cfg.data.size, 4)
    ae = load_autoencoder(Path(tc.prior) / "autoencoder")
    rank, _ = rank_and_world()
    eval_images = as_float(images[:tc.eval_images])
    objective = UpsamplingObjective(ViewUpsampler(tc.model), ae, tc.latent_noise, tc.alpha_weight)
    trainer = Trainer(objective, tc.optim)
    _fit_on_images(ctx, trainer, images, lambda: upsampling_metrics(objective.net.eval(), ae, eval_images[:32]))
    if rank != 0:
        return
    net = trainer.ema_model(lambda: UpsamplingObjective(ViewUpsampler(tc.model), ae, 0.0, 1.0)).net
    net.save_pretrained(ctx.path / "upsampler")
    metrics, bilinear = upsampling_metrics(net, ae, eval_images), upsampling_metrics(None, ae, eval_images)
    ctx.set_metrics(**{f"upsampler_{k}": round(v, 4) for k, v in metrics.items()},
                    **{f"bilinear_{k}": round(v, 4) for k, v in bilinear.items()})
    ctx.log(f"upsampler EMA: {metrics}; bilinear upsampling: {bilinear}")
    save_loss_curve(trainer.losses, ctx.path / "loss_upsampler.png", "upsampler loss")
    ctx.add_artifact("loss_upsampler.png", "curve")


def _upsampler_prior_stage(ctx) -> None:
    cfg: TrainConfig = ctx.config
    info = {"config": ctx.inputs.get("config"), "seed": ctx.seed, "steps": cfg.upsampler.optim.steps,
            "scenes": cfg.data.scenes, "size": cfg.data.size}
    manifest = add_upsampler(Path(cfg.upsampler.prior), ctx.path / "prior",
                             ViewUpsampler.from_pretrained(ctx.path / "upsampler"), info)
    ctx.log(f"prior folder written: {len(manifest['files'])} files")


def _multiview_stage(ctx) -> None:
    cfg: TrainConfig = ctx.config
    dataset = cache_images(cfg)
    latents = np.load(ctx.path / "latents.npy")
    animated = bool(dataset.params.get("times"))
    if animated != cfg.multiview.model.clip_time:
        raise UserError(f"multiview.model.clip_time must be {animated} for the cache {cfg.data.cache_dir} "
                        f"({'animated' if animated else 'static'} scenes)")
    sets = LatentSets(latents, dataset.c2w, used_captions(cfg), float(dataset.params["fov_y_deg"]),
                      TextEncoder(cache_file=text_cache(cfg)), cfg.multiview, ctx.seed,
                      dataset.times if animated else None, int(dataset.params["views"]),
                      view_poses(dataset) if animated else None)
    rank, world = rank_and_world()
    schedule = noise_schedule()
    model = MultiViewDenoiser(cfg.multiview.model)
    if cfg.multiview.init_from:
        initialise_from(model, Path(cfg.multiview.init_from))
    trainer = Trainer(model, cfg.multiview.optim)

    def loss_fn(net, step: int):
        x0, cond = sets.batch(step, rank, world)
        return diffusion_loss(Denoiser(net, schedule, "v"), x0, ctx.generator, cond, group=cond["views"])

    fit(ctx, trainer, loss_fn)
    if rank == 0:
        trainer.ema_model(lambda: MultiViewDenoiser(cfg.multiview.model)).save_pretrained(ctx.path / "multiview")
        save_loss_curve(trainer.losses, ctx.path / "loss_multiview.png", "multi-view diffusion loss")
        ctx.add_artifact("loss_multiview.png", "curve")
        ctx.set_metrics(final_loss=round(float(np.mean(trainer.losses[-100:])), 5), steps=len(trainer.losses))


def _motion_stage(ctx) -> None:
    """Fit the 4D prior's motion head to the ground-truth poses of the training captions."""
    cfg: TrainConfig = ctx.config
    dataset = cache_images(cfg)
    captions = used_captions(cfg)
    motions = np.repeat([json.loads(spec)["motion"] for spec in dataset.specs], captions.shape[1])
    pooled = TextEncoder(cache_file=text_cache(cfg)).encode(captions.reshape(-1).tolist()).pooled

    def poses(index: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.stack([pose_at(motions[i], float(x)) for i, x in zip(index.tolist(), t)])).float()

    head, losses = train_motion_head(pooled, poses, cfg.multiview.motion_steps, ctx.generator)
    head.save_pretrained(ctx.path / "motion")
    ctx.set_metrics(motion_loss=round(float(np.mean(losses[-50:])), 6))
    ctx.log(f"motion head: {len(losses)} steps, final pose MSE {np.mean(losses[-50:]):.2e}")


def initialise_from(model, folder: Path) -> None:
    """Load a trained multi-view model's weights; layers it lacks keep their init. Only layers whose
    output starts at zero may be added (clip time, set attention at a further level), so the new
    model computes exactly the old one until training moves them."""
    source = MultiViewDenoiser.from_pretrained(folder)
    try:
        missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    except RuntimeError as error:  # a layer of another shape
        raise UserError(f"{folder}: its layers do not match multiview.model ({str(error).splitlines()[-1].strip()})") from None
    if unexpected or any(not (key.startswith("clip_time_mlp.") or ".attn." in key) for key in missing):
        raise UserError(f"{folder}: its layers do not match multiview.model (missing {missing}, unexpected {unexpected})")


def _prior_stage(ctx) -> None:
    cfg: TrainConfig = ctx.config
    shipped = cfg.multiview.autoencoder
    info = {"trained": {"config": ctx.inputs.get("config"), "seed": ctx.seed, "autoencoder": shipped,
                        "init_from": cfg.multiview.init_from or None,
                        "steps": cfg.multiview.optim.steps, "scenes": cfg.data.scenes}}
    name = "shapeworld-4d" if cfg.multiview.model.clip_time else "shapeworld-mv"
    extras = {"motion": ctx.path / "motion"} if cfg.multiview.model.clip_time else {}
    manifest = export_prior(ctx.path / "prior", load_autoencoder(Path(shipped)),
                            MultiViewDenoiser.from_pretrained(ctx.path / "multiview"), info, name, extras)
    ctx.log(f"prior folder written: {len(manifest['files'])} files")


def _multiview_stages(animated: bool) -> list[Stage]:
    motion = [Stage("motion", _motion_stage, lambda job: job.config.multiview.motion_steps * 0.01)] if animated else []
    return [Stage("text", text_stage, lambda job: 60.0), *motion,
            Stage("latents", latents_stage, lambda job: job.config.data.scenes * 0.002),
            Stage("multiview", _multiview_stage, lambda job: job.config.multiview.optim.steps * 0.5),
            Stage("prior", _prior_stage, lambda job: 10.0)]


TRAINING_STAGES = {"autoencoder", "multiview", "upsampler"}  # the stages every rank runs under torchrun


def build_job(cfg: TrainConfig, inputs: dict, seed: int) -> Job:
    stages = [Stage("cache", cache_stage, lambda job: job.config.data.scenes * 0.1)]
    if cfg.model == "autoencoder":
        stages.append(Stage("autoencoder", _autoencoder_stage, lambda job: job.config.autoencoder.optim.steps * 0.3))
    elif cfg.model == "upsampler":
        stages += [Stage("upsampler", _upsampler_stage, lambda job: job.config.upsampler.optim.steps * 0.3),
                   Stage("prior", _upsampler_prior_stage, lambda job: 5.0)]
    else:
        stages += _multiview_stages(cfg.multiview.model.clip_time)
    stages = [Stage(s.name, then_barrier(s.run), s.estimate_seconds) for s in stages]
    return Job(kind="train", config=cfg, inputs=inputs, seed=seed, stages=stages, slug=cfg.model)


def run_training(job: Job, out: Path | None, resume: bool) -> RunFolder | None:
    """Run (or, with `resume`, continue in `out`) the training job; under torchrun rank 0 runs it
    and returns its run folder, the other ranks follow it and return None."""
    rank, world = init_distributed()
    if world > 1 and out is None:
        raise UserError("under torchrun pass --out RUN_DIR: every rank reads the same run folder")
    if rank > 0:
        follow_job(job, out, rank, TRAINING_STAGES)
        return None
    if world > 1:
        dist.barrier()  # the other ranks have read the stage statuses (see follow_job)
    return resume_job(RunFolder.open(out), job) if resume else run_job(job, out)
