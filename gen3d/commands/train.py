"""`gen3d train CONFIG`: train the bundled prior's autoencoder or multi-view diffusion model.

Both are jobs in a run folder (manifest, events, log, checkpoints under ckpt/), so an interrupted
training continues with `gen3d train CONFIG --out RUN --resume`. Stages:

* autoencoder: cache (render ShapeWorld) -> autoencoder (train; writes RUN/autoencoder/)
* multiview:   cache -> text (caption embeddings) -> latents (encode the cache once with the
  trained autoencoder) -> multiview (train on cached latents) -> prior (the shippable folder
  RUN/prior/: fp16 weights, config.json, manifest.json with sha256)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import typer

from gen3d.cli import app
from gen3d.commands.options import DryRunOpt, OutOpt, SeedOpt, SetOpt
from gen3d.config import load_config
from gen3d.errors import UserError
from gen3d.models.autoencoder import AEConfig
from gen3d.models.multiview import MVConfig
from gen3d.models.training import OptimConfig
from gen3d.runs import Job, RunFolder, dry_run, resume_job, run_job
from gen3d.runs.job import Stage


@dataclass
class DataConfig:
    cache_dir: str = "runs/data/shapeworld-train"  # shared by runs with the same parameters
    scenes: int = 6144
    views_per_scene: int = 8  # cameras per scene
    times_per_scene: int = 0  # > 0: animated ShapeWorld, every camera at this many clip times
    size: int = 64
    seed: int = 0
    ss: int = 2
    workers: int = 2
    captions_per_scene: int = 2  # the first k stored captions are used (and embedded)


@dataclass
class AutoencoderTrainConfig:
    model: AEConfig = field(default_factory=AEConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=1500, batch=16, lr=1e-3))
    latent_noise: float = 0.05  # std of the noise added to (unit-variance) latents in training
    alpha_weight: float = 2.0
    eval_images: int = 256  # metrics (PSNR, alpha IoU) and the scaling factor on the first cached views


@dataclass
class MultiviewTrainConfig:
    autoencoder: str = "runs/train/ae/autoencoder"  # folder written by an autoencoder run (encodes the latents)
    model: MVConfig = field(default_factory=MVConfig)
    # optim.batch counts view slots (targets + observed) per step
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=3000, batch=24, lr=5e-4))
    min_views: int = 4
    max_views: int = 8
    max_observed: int = 3
    text_drop: float = 0.1
    observed_drop: float = 0.1  # a set with observed views trains without them (CFG's uncond)
    text_only: float = 0.4  # share of batches with no observed view at all
    # 4D (animated caches): share of batches whose sets hold targets of one clip time and observed
    # views of another, the layout text-to-4d samples with (the rest mix times freely)
    per_time_sets: float = 0.6
    init_from: str = ""  # a multi-view model folder to start from (e.g. the shipped prior's multiview/)
    motion_steps: int = 1500  # 4D: steps fitting the motion head (caption, time -> object pose)


@dataclass
class TrainConfig:
    model: Literal["autoencoder", "multiview"] = "multiview"
    threads: int = 2
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)
    multiview: MultiviewTrainConfig = field(default_factory=MultiviewTrainConfig)


# ---- stages -------------------------------------------------------------------------------

def _cache_stage(ctx) -> None:
    from gen3d.shapeworld.dataset import build_cache

    d = ctx.config.data
    build_cache(Path(d.cache_dir), d.scenes, d.views_per_scene, d.size, d.seed, "train", d.workers, ss=d.ss,
                times_per_scene=d.times_per_scene)


def _cache_images(cfg: TrainConfig):
    from gen3d.shapeworld.dataset import ShapeWorldDataset

    return ShapeWorldDataset(Path(cfg.data.cache_dir), views=cfg.data.views_per_scene, seed=cfg.data.seed)


def _as_float(rgba_uint8: np.ndarray) -> torch.Tensor:
    """(..., H, W, 4) uint8 -> (N, 4, H, W) float in [0, 1]."""
    flat = rgba_uint8.reshape(-1, *rgba_uint8.shape[-3:])
    return torch.from_numpy(flat).permute(0, 3, 1, 2).float() / 255.0


def _autoencoder_stage(ctx) -> None:
    """Train the decoder. The (fixed) encoder's scaling factor is measured first and the folder
    written at once, so a multi-view run can encode its latents while the decoder trains."""
    from gen3d.models import autoencoder as aem
    from gen3d.models.training import (
        Trainer,
        batch_indices,
        fit,
        rank_and_world,
        save_loss_curve,
    )

    cfg: TrainConfig = ctx.config
    tc = cfg.autoencoder
    images = _cache_images(cfg).rgba.reshape(-1, cfg.data.size, cfg.data.size, 4)
    rank, world = rank_and_world()
    eval_images = _as_float(images[:tc.eval_images])
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

    def loss_fn(net, step: int):
        idx = np.sort(batch_indices(len(images), tc.optim.batch, step, ctx.seed, rank, world))
        return net(_as_float(images[idx]), ctx.generator)

    def on_log(step: int) -> dict:
        if step % (tc.optim.log_every * 10) and step != tc.optim.steps:
            return {}
        return aem.reconstruction_metrics(objective.ae.eval(), eval_images[:64])

    fit(ctx, trainer, loss_fn, on_log)
    if rank != 0:
        return
    ae = trainer.ema_model(build).ae
    metrics = aem.reconstruction_metrics(ae, eval_images)
    ae.save_pretrained(out)
    ctx.set_metrics(**{f"ae_{k}": round(v, 4) for k, v in metrics.items()}, scaling_factor=scaling)
    ctx.log(f"autoencoder EMA: {metrics}, scaling_factor {scaling:.4f}")
    save_loss_curve(trainer.losses, ctx.path / "loss_autoencoder.png", "autoencoder loss")
    ctx.add_artifact("loss_autoencoder.png", "curve")


class LatentSets:
    """A latent cache as training sets for the multi-view denoiser.

    Everything random about batch `step` (set size N in [min_views, max_views], observed count K,
    scenes, views, captions, condition drops) comes from a generator seeded by (seed, step), so
    the data order survives a resume without any saved sampler state. With an animated cache
    (`times` not None: views time-major, `cameras` per time) the sets carry clip times too, and
    every view's rays are given in the object's frame at its time (`poses`, the ground truth the
    4D prior's motion head predicts at sampling time).
    """

    def __init__(self, latents: np.ndarray, c2w: np.ndarray, captions: np.ndarray, fov_y_deg: float,
                 text, cfg: MultiviewTrainConfig, seed: int, times: np.ndarray | None = None, cameras: int = 0,
                 poses: np.ndarray | None = None):
        self.latents, self.c2w, self.captions = latents, c2w, captions
        self.fov_y_deg, self.text, self.cfg, self.seed = fov_y_deg, text, cfg, seed
        self.times, self.cameras, self.poses = times, cameras, poses

    def shape_of(self, step: int) -> tuple[np.random.Generator, int, int, int, bool]:
        """(rng, N targets, K observed, global sets, per-time layout) of batch `step`."""
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, step])
        n = int(rng.integers(cfg.min_views, cfg.max_views + 1))
        per_time = self.times is not None and rng.random() < cfg.per_time_sets
        if per_time:
            n = min(n, self.cameras)
        room = min(cfg.max_observed, self.cameras if per_time else self.latents.shape[1] - n)
        k = 0 if room <= 0 or rng.random() < cfg.text_only else int(rng.integers(1, room + 1))
        return rng, n, k, max(1, cfg.optim.batch // (n + k)), per_time

    def _views(self, rng: np.random.Generator, sets: int, n: int, k: int, per_time: bool) -> tuple[np.ndarray, np.ndarray]:
        """(targets (sets, n), observed (sets, k)) view indices of each set's scene."""
        if not per_time:
            order = np.stack([rng.permutation(self.latents.shape[1]) for _ in range(sets)])
            return order[:, :n], order[:, n:n + k]
        clip_times = self.latents.shape[1] // self.cameras
        target_time = rng.integers(clip_times, size=sets)
        observed_time = (target_time + rng.integers(1, clip_times, size=sets)) % clip_times
        cams = [rng.permutation(self.cameras) for _ in range(2 * sets)]
        targets = target_time[:, None] * self.cameras + np.stack(cams[:sets])[:, :n]
        observed = observed_time[:, None] * self.cameras + np.stack(cams[sets:])[:, :k]
        return targets, observed

    def batch(self, step: int, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, dict]:
        from gen3d.cameras import from_fov
        from gen3d.models.motion import object_frame_plucker
        from gen3d.models.shapeworld_prior import make_cond, plucker_maps
        from gen3d.models.text import TextEmbedding

        rng, n, k, sets, per_time = self.shape_of(step)
        sets = max(world, sets - sets % world)
        scenes = rng.choice(len(self.latents), size=sets, replace=False)
        targets, observed = self._views(rng, sets, n, k, per_time)
        caption_pick = rng.integers(self.captions.shape[1], size=sets)
        drop_text = rng.random(sets) < self.cfg.text_drop
        drop_obs = rng.random(sets) < self.cfg.observed_drop
        mine = slice(rank * (sets // world), (rank + 1) * (sets // world))
        scenes, targets, observed, caption_pick, drop_text, drop_obs = (
            a[mine] for a in (scenes, targets, observed, caption_pick, drop_text, drop_obs))

        def gather(array: np.ndarray, views: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array[scenes[:, None], views].astype(np.float32))

        def cams(views: np.ndarray):
            c2w = gather(self.c2w, views).reshape(-1, 4, 4)
            return from_fov(c2w, self.fov_y_deg, 64, 64)

        def rays(views: np.ndarray) -> torch.Tensor:
            if self.poses is None:
                return plucker_maps(cams(views))
            return object_frame_plucker(cams(views).resized(16, 16), gather(self.poses, views).reshape(-1, 5))

        x0 = gather(self.latents, targets).flatten(0, 1)
        captions = ["" if dropped else str(self.captions[s, c]) for s, c, dropped in zip(scenes, caption_pick, drop_text)]
        emb = self.text.encode(captions)
        text = TextEmbedding(*(t.repeat_interleave(n, 0) for t in (emb.tokens, emb.mask, emb.pooled)))
        obs_pl = rays(observed).view(len(scenes), k, 6, *x0.shape[-2:]) if k else \
            torch.zeros(len(scenes), 0, 6, *x0.shape[-2:])
        times = obs_times = None
        if self.times is not None:
            times, obs_times = gather(self.times, targets).flatten(), gather(self.times, observed)
        cond = make_cond(text, rays(targets), n, gather(self.latents, observed),
                         obs_pl, torch.from_numpy(~drop_obs), times, obs_times)
        return x0, cond


def _text_cache(cfg: TrainConfig) -> Path:
    return Path(cfg.data.cache_dir) / f"text_k{cfg.data.captions_per_scene}.npz"


def _used_captions(cfg: TrainConfig) -> np.ndarray:
    return _cache_images(cfg).captions[:, :cfg.data.captions_per_scene]


def _text_stage(ctx) -> None:
    """Embed only the captions training uses (plus "" for dropped text), once, into a shared cache."""
    from gen3d.models.text import TextEncoder

    captions = sorted(set(_used_captions(ctx.config).reshape(-1).tolist())) + [""]
    encoder = TextEncoder(cache_file=_text_cache(ctx.config))
    for start in range(0, len(captions), 512):
        encoder.encode(captions[start:start + 512])
        ctx.event(min(start + 512, len(captions)), len(captions))
    encoder.save_cache()


def _latents_stage(ctx) -> None:
    """Encode every cached view once (fp16), with the autoencoder folder's scaling factor."""
    from gen3d.models.autoencoder import encode_mean
    from gen3d.models.shapeworld_prior import load_autoencoder
    from gen3d.runs.folder import atomic_output

    ae = load_autoencoder(Path(ctx.config.multiview.autoencoder))
    images = _cache_images(ctx.config).rgba
    flat = images.reshape(-1, *images.shape[-3:])
    out = np.empty((len(flat), 4, 16, 16), dtype=np.float16)
    with torch.no_grad():
        for start in range(0, len(flat), 128):
            out[start:start + 128] = encode_mean(ae, _as_float(flat[start:start + 128])).numpy()
            if (start // 128) % 20 == 0:
                ctx.event(start + 128, len(flat))
    with atomic_output(ctx.path / "latents.npy") as tmp:
        np.save(tmp, out.reshape(*images.shape[:2], 4, 16, 16))
    ctx.log(f"latents: {len(flat)} views, std {float(out.astype(np.float32).std()):.3f}")


def _multiview_stage(ctx) -> None:
    from gen3d.diffusion.denoiser import Denoiser
    from gen3d.diffusion.losses import diffusion_loss
    from gen3d.models.multiview import MultiViewDenoiser
    from gen3d.models.shapeworld_prior import noise_schedule
    from gen3d.models.text import TextEncoder
    from gen3d.models.training import Trainer, fit, rank_and_world, save_loss_curve

    cfg: TrainConfig = ctx.config
    dataset = _cache_images(cfg)
    latents = np.load(ctx.path / "latents.npy")
    animated = bool(dataset.params.get("times"))
    if animated != cfg.multiview.model.clip_time:
        raise UserError(f"multiview.model.clip_time must be {animated} for the cache {cfg.data.cache_dir} "
                        f"({'animated' if animated else 'static'} scenes)")
    sets = LatentSets(latents, dataset.c2w, _used_captions(cfg), float(dataset.params["fov_y_deg"]),
                      TextEncoder(cache_file=_text_cache(cfg)), cfg.multiview, ctx.seed,
                      dataset.times if animated else None, int(dataset.params["views"]),
                      _view_poses(dataset) if animated else None)
    rank, world = rank_and_world()
    schedule = noise_schedule()
    model = MultiViewDenoiser(cfg.multiview.model)
    if cfg.multiview.init_from:
        _initialise_from(model, Path(cfg.multiview.init_from))
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


def _view_poses(dataset) -> np.ndarray:
    """Ground-truth object pose (scenes, views, 5) of every view of an animated cache."""
    import json

    from gen3d.shapeworld.animated import pose_at

    motions = [json.loads(spec)["motion"] for spec in dataset.specs]
    return np.stack([[pose_at(m, float(t)) for t in row] for m, row in zip(motions, dataset.times)]).astype(np.float32)


def _motion_stage(ctx) -> None:
    """Fit the 4D prior's motion head to the ground-truth poses of the training captions."""
    import json

    from gen3d.models.motion import train_motion_head
    from gen3d.models.text import TextEncoder
    from gen3d.shapeworld.animated import pose_at

    cfg: TrainConfig = ctx.config
    dataset = _cache_images(cfg)
    captions = _used_captions(cfg)
    motions = np.repeat([json.loads(spec)["motion"] for spec in dataset.specs], captions.shape[1])
    pooled = TextEncoder(cache_file=_text_cache(cfg)).encode(captions.reshape(-1).tolist()).pooled

    def poses(index: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.stack([pose_at(motions[i], float(x)) for i, x in zip(index.tolist(), t)])).float()

    head, losses = train_motion_head(pooled, poses, cfg.multiview.motion_steps, ctx.generator)
    head.save_pretrained(ctx.path / "motion")
    ctx.set_metrics(motion_loss=round(float(np.mean(losses[-50:])), 6))
    ctx.log(f"motion head: {len(losses)} steps, final pose MSE {np.mean(losses[-50:]):.2e}")


def _initialise_from(model, folder: Path) -> None:
    """Load a trained multi-view model's weights; only layers it lacks (clip time) keep their init."""
    from gen3d.models.multiview import MultiViewDenoiser

    source = MultiViewDenoiser.from_pretrained(folder)
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    if unexpected or any(not key.startswith("clip_time_mlp.") for key in missing):
        raise UserError(f"{folder}: its layers do not match multiview.model (missing {missing}, unexpected {unexpected})")


def _prior_stage(ctx) -> None:
    from gen3d.models.multiview import MultiViewDenoiser
    from gen3d.models.shapeworld_prior import export_prior, load_autoencoder

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
    return [Stage("text", _text_stage, lambda job: 60.0), *motion,
            Stage("latents", _latents_stage, lambda job: job.config.data.scenes * 0.002),
            Stage("multiview", _multiview_stage, lambda job: job.config.multiview.optim.steps * 0.5),
            Stage("prior", _prior_stage, lambda job: 10.0)]


TRAINING_STAGES = {"autoencoder", "multiview"}  # the stages every rank runs under torchrun


def _then_barrier(run):
    """Under torchrun, rank 0 waits at the end of each stage for the other ranks (see follow_job)."""
    import torch.distributed as dist

    def wrapped(ctx) -> None:
        run(ctx)
        if dist.is_initialized():
            dist.barrier()
    return wrapped


def build_job(cfg: TrainConfig, inputs: dict, seed: int) -> Job:
    stages = [Stage("cache", _cache_stage, lambda job: job.config.data.scenes * 0.1)]
    if cfg.model == "autoencoder":
        stages.append(Stage("autoencoder", _autoencoder_stage, lambda job: job.config.autoencoder.optim.steps * 0.3))
    else:
        stages += _multiview_stages(cfg.multiview.model.clip_time)
    stages = [Stage(s.name, _then_barrier(s.run), s.estimate_seconds) for s in stages]
    return Job(kind="train", config=cfg, inputs=inputs, seed=seed, stages=stages, slug=cfg.model)


@app.command("train")
def train(
    config: Annotated[Path, typer.Argument(help="Training config (configs/train/*.yaml).")],
    set_: SetOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    dry: DryRunOpt = False,
) -> None:
    """Train the bundled prior's autoencoder or multi-view diffusion model on ShapeWorld."""
    from gen3d.models.training import follow_job, init_distributed

    cfg = load_config(TrainConfig, config, list(set_ or []))
    torch.set_num_threads(cfg.threads)
    if resume and out is None:
        raise UserError("--resume needs --out RUN_DIR (the run to continue)")
    if dry:
        dry_run(build_job(cfg, {"config": str(config)}, seed))
        return
    rank, world = init_distributed()
    if world > 1 and out is None:
        raise UserError("under torchrun pass --out RUN_DIR: every rank reads the same run folder")
    job = build_job(cfg, {"config": str(config)}, seed)
    if rank > 0:
        follow_job(job, out, rank, TRAINING_STAGES)
        return
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # the other ranks have read the stage statuses (see follow_job)
    if resume:
        run = resume_job(RunFolder.open(out), job)
    else:
        run = run_job(job, out)
    if run.status == "interrupted":
        raise typer.Exit(130)
