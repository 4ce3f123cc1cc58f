"""Batches of latent view sets for the multi-view denoiser, drawn from the encoded cache."""

from __future__ import annotations

import numpy as np
import torch

from gen3d.cameras import from_fov
from gen3d.models.motion import object_frame_plucker
from gen3d.models.shapeworld_prior import make_cond, plucker_maps
from gen3d.models.text import TextEmbedding
from gen3d.training.config import MultiviewTrainConfig


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
