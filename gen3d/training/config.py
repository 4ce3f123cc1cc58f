"""The `train` job's config: the ShapeWorld cache it trains on and each model's optimisation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gen3d.errors import UserError
from gen3d.models.autoencoder import AEConfig
from gen3d.models.multiview import MVConfig
from gen3d.models.upsampler import UpsamplerConfig
from gen3d.training.trainer import TrainOptimConfig


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
    optim: TrainOptimConfig = field(default_factory=lambda: TrainOptimConfig(steps=1500, batch=16, lr=1e-3))
    latent_noise: float = 0.05  # std of the noise added to (unit-variance) latents in training
    alpha_weight: float = 2.0
    eval_images: int = 256  # metrics (PSNR, alpha IoU) and the scaling factor on the first cached views


@dataclass
class MultiviewTrainConfig:
    autoencoder: str = "runs/train/ae/autoencoder"  # folder written by an autoencoder run (encodes the latents)
    model: MVConfig = field(default_factory=MVConfig)
    # optim.batch counts view slots (targets + observed) per step
    optim: TrainOptimConfig = field(default_factory=lambda: TrainOptimConfig(steps=3000, batch=24, lr=5e-4))
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
class UpsamplerTrainConfig:
    prior: str = "gen3d/assets/priors/shapeworld-mv"  # the prior folder it joins (its autoencoder makes the inputs)
    model: UpsamplerConfig = field(default_factory=UpsamplerConfig)
    optim: TrainOptimConfig = field(default_factory=lambda: TrainOptimConfig(steps=3000, batch=8, lr=1e-3))
    latent_noise: float = 0.1  # each batch's latents get noise of a random std up to this (generated latents err)
    alpha_weight: float = 2.0
    eval_images: int = 128  # metrics on the first cached views (against plain bilinear upsampling)


@dataclass
class TrainConfig:
    model: Literal["autoencoder", "multiview", "upsampler"] = "multiview"
    threads: int = 2
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)
    multiview: MultiviewTrainConfig = field(default_factory=MultiviewTrainConfig)
    upsampler: UpsamplerTrainConfig = field(default_factory=UpsamplerTrainConfig)

    def check(self) -> None:
        """The model folders this run starts from, and the upsampler's image size (the job
        validation pass calls this before a run folder exists; UserError names the key)."""
        if self.model == "upsampler":
            from gen3d.models.shapeworld_prior import verify_folder  # diffusers: imported only when needed

            verify_folder(Path(self.upsampler.prior))
            if self.data.size != 64 * self.upsampler.model.scale:
                raise UserError(f"config key 'data.size' must be {64 * self.upsampler.model.scale} "
                                f"for upsampler.model.scale={self.upsampler.model.scale}")
        elif self.model == "multiview":
            for key, folder in (("autoencoder", self.multiview.autoencoder), ("init_from", self.multiview.init_from)):
                if folder and not (Path(folder) / "config.json").is_file():
                    raise UserError(f"{Path(folder) / 'config.json'}: missing (config key 'multiview.{key}')")
