"""The training data stages: ShapeWorld renders cached once, caption embeddings and autoencoder
latents computed once, each into a file that later stages (and later runs) read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gen3d.io import atomic_output
from gen3d.models.autoencoder import encode_mean
from gen3d.models.shapeworld_prior import load_autoencoder
from gen3d.models.text import TextEncoder
from gen3d.shapeworld.animated import pose_at
from gen3d.shapeworld.dataset import ShapeWorldDataset, build_cache
from gen3d.training.config import TrainConfig

TEXT_CACHE_NAME = "text_embeddings.npz"  # every caption of a cache, embedded (precompute_text_embeddings)


def cache_stage(ctx) -> None:
    d = ctx.config.data
    build_cache(Path(d.cache_dir), d.scenes, d.views_per_scene, d.size, d.seed, "train", d.workers, ss=d.ss,
                times_per_scene=d.times_per_scene)


def cache_images(cfg: TrainConfig):
    return ShapeWorldDataset(Path(cfg.data.cache_dir), views=cfg.data.views_per_scene, seed=cfg.data.seed)


def as_float(rgba_uint8: np.ndarray) -> torch.Tensor:
    """(..., H, W, 4) uint8 -> (N, 4, H, W) float in [0, 1]."""
    flat = rgba_uint8.reshape(-1, *rgba_uint8.shape[-3:])
    return torch.from_numpy(flat).permute(0, 3, 1, 2).float() / 255.0


def text_cache(cfg: TrainConfig) -> Path:
    return Path(cfg.data.cache_dir) / f"text_k{cfg.data.captions_per_scene}.npz"


def used_captions(cfg: TrainConfig) -> np.ndarray:
    return cache_images(cfg).captions[:, :cfg.data.captions_per_scene]


def text_stage(ctx) -> None:
    """Embed only the captions training uses (plus "" for dropped text), once, into a shared cache."""
    captions = sorted(set(used_captions(ctx.config).reshape(-1).tolist())) + [""]
    encoder = TextEncoder(cache_file=text_cache(ctx.config))
    for start in range(0, len(captions), 512):
        encoder.encode(captions[start:start + 512])
        ctx.event(min(start + 512, len(captions)), len(captions))
    encoder.save_cache()


def latents_stage(ctx) -> None:
    """Encode every cached view once (fp16), with the autoencoder folder's scaling factor."""
    ae = load_autoencoder(Path(ctx.config.multiview.autoencoder))
    images = cache_images(ctx.config).rgba
    flat = images.reshape(-1, *images.shape[-3:])
    out = np.empty((len(flat), 4, 16, 16), dtype=np.float16)
    with torch.no_grad():
        for start in range(0, len(flat), 128):
            out[start:start + 128] = encode_mean(ae, as_float(flat[start:start + 128])).numpy()
            if (start // 128) % 20 == 0:
                ctx.event(start + 128, len(flat))
    with atomic_output(ctx.path / "latents.npy") as tmp:
        np.save(tmp, out.reshape(*images.shape[:2], 4, 16, 16))
    ctx.log(f"latents: {len(flat)} views, std {float(out.astype(np.float32).std()):.3f}")


def view_poses(dataset) -> np.ndarray:
    """Ground-truth object pose (scenes, views, 5) of every view of an animated cache."""
    motions = [json.loads(spec)["motion"] for spec in dataset.specs]
    return np.stack([[pose_at(m, float(t)) for t in row] for m, row in zip(motions, dataset.times)]).astype(np.float32)


def precompute_text_embeddings(cache_dir: Path, encoder: TextEncoder | None = None) -> Path:
    """Encode every caption of a cache into its on-disk text cache, so training never runs the
    text model; `encoder` defaults to a `TextEncoder` on that file."""
    path = Path(cache_dir) / TEXT_CACHE_NAME
    encoder = encoder or TextEncoder(cache_file=path)
    encoder.encode(ShapeWorldDataset(cache_dir, views=1).unique_captions())
    return encoder.save_cache(path)
