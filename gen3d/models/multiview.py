"""The bundled prior's multi-view denoiser: one network for text-, image- and few-view-conditioned sets.

A set is N target views (noisy latents) plus K observed views (clean latents, CAT3D style).
Every view slot gets four inputs stacked as channels: the latent the sampler sees (noisy for
targets, the clean latent for observed slots), the observed clean latent (zeros for targets),
a mask channel (1 on observed slots) and the slot camera's Plücker ray map in world
coordinates, which pins every view to an absolute pose (so e.g. a cube's yaw is consistent
across views). A small UNet processes all slots; at 8x8 and 4x4 self-attention runs over
every token of every view in the set (which is what makes the views agree) and cross-attends
to the caption's MiniLM tokens; the timestep embedding plus the pooled caption modulates
every residual block (scale-shift). Only the target slots' outputs (v-prediction) are returned.

A 4D model (`clip_time=True`, the `shapeworld-4d` prior) also gives every slot its own clip time
t in [0, 1] (targets: `times`, observed: `obs_times`), so one set can hold views of the same
object at different moments (CAT4D style). Smooth Fourier features of t, together with the
pooled caption (which names the motion), go through an MLP into that slot's modulation: where
an object is at time t depends on what the caption says it does, so the MLP sees both. Its
output layer starts at zero, so a 4D model initialised from a multi-view one computes exactly
the multi-view model until fine-tuning teaches it motion.

Inputs arrive as a flat stack of target views (the `Prior` convention) with per-view
conditioning, so classifier-free guidance can batch branches along dim 0; `views` (an int,
equal in both branches) says how many consecutive rows form one set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen3d.models.pretrained import load_folder, save_folder


@dataclass
class MVConfig:
    latent_channels: int = 4
    latent_size: int = 16
    channels: tuple[int, ...] = (64, 128, 192)  # at 16x16, 8x8, 4x4
    attention_from_level: int = 1  # joint attention + text cross-attention at this level and below
    heads: int = 4
    emb_dim: int = 256
    text_dim: int = 384
    groups: int = 16
    clip_time: bool = False  # per-view clip time conditioning (4D)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of the model time (0..999)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


CLIP_TIME_FREQUENCIES = 6


def clip_time_features(t: Tensor) -> Tensor:
    """sin and cos of 2^k * pi * t for k < CLIP_TIME_FREQUENCIES: smooth over the clip t in [0, 1]."""
    angles = t.float()[:, None] * math.pi * 2.0 ** torch.arange(CLIP_TIME_FREQUENCIES, dtype=torch.float32, device=t.device)
    return torch.cat([torch.sin(angles), torch.cos(angles)], 1)


class ResBlock(nn.Module):
    """Two 3x3 convolutions; the embedding scales and shifts the normalised second half."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class SetAttention(nn.Module):
    """Self-attention over all tokens of all views of a set, then cross-attention to the caption."""

    def __init__(self, ch: int, text_dim: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm_self = nn.GroupNorm(groups, ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.out_self = nn.Linear(ch, ch)
        self.norm_cross = nn.GroupNorm(groups, ch)
        self.q = nn.Linear(ch, ch)
        self.kv = nn.Linear(text_dim, 2 * ch)
        self.out_cross = nn.Linear(ch, ch)
        for layer in (self.out_self, self.out_cross):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _split(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def _merge(self, x: Tensor) -> Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, x: Tensor, views: int, text: Tensor, text_mask: Tensor) -> Tensor:
        bv, c, hh, ww = x.shape
        sets = bv // views
        tokens = self.norm_self(x).view(sets, views, c, hh * ww).permute(0, 1, 3, 2).reshape(sets, views * hh * ww, c)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        attended = self._merge(F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v)))
        delta = self.out_self(attended).view(sets, views, hh * ww, c).permute(0, 1, 3, 2).reshape(bv, c, hh, ww)
        x = x + delta
        # caption cross-attention per view (every view of a set carries the same caption)
        tokens = self.norm_cross(x).flatten(2).transpose(1, 2)
        k, v = self.kv(text).chunk(2, dim=-1)
        mask = text_mask[:, None, None, :]
        attended = self._merge(F.scaled_dot_product_attention(
            self._split(self.q(tokens)), self._split(k), self._split(v), attn_mask=mask))
        return x + self.out_cross(attended).transpose(1, 2).reshape(bv, c, hh, ww)


class Level(nn.Module):
    def __init__(self, cin: int, cout: int, cfg: MVConfig, attention: bool):
        super().__init__()
        self.res = ResBlock(cin, cout, cfg.emb_dim, cfg.groups)
        self.attn = SetAttention(cout, cfg.text_dim, cfg.heads, cfg.groups) if attention else None

    def forward(self, x, emb, views, text, text_mask):
        x = self.res(x, emb)
        return self.attn(x, views, text, text_mask) if self.attn is not None else x


class MultiViewDenoiser(nn.Module):
    """net(x, t, **cond) -> v-prediction for target views; see the module docstring for `cond`."""

    def __init__(self, cfg: MVConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        lat = cfg.latent_channels
        self.conv_in = nn.Conv2d(2 * lat + 1 + 6, ch[0], 3, padding=1)
        self.time_mlp = nn.Sequential(nn.Linear(ch[0], cfg.emb_dim), nn.SiLU(), nn.Linear(cfg.emb_dim, cfg.emb_dim))
        self.text_proj = nn.Linear(cfg.text_dim, cfg.emb_dim)
        self.clip_time_mlp = None
        if cfg.clip_time:
            self.clip_time_mlp = nn.Sequential(nn.Linear(2 * CLIP_TIME_FREQUENCIES + cfg.text_dim, cfg.emb_dim), nn.SiLU(),
                                               nn.Linear(cfg.emb_dim, cfg.emb_dim))
            nn.init.zeros_(self.clip_time_mlp[-1].weight)
            nn.init.zeros_(self.clip_time_mlp[-1].bias)
        attn = [i >= cfg.attention_from_level for i in range(len(ch))]
        self.down = nn.ModuleList(Level(ch[max(i - 1, 0)], ch[i], cfg, attn[i]) for i in range(len(ch)))
        self.downsample = nn.ModuleList(nn.Conv2d(ch[i], ch[i], 3, stride=2, padding=1) for i in range(len(ch) - 1))
        self.mid = nn.ModuleList([Level(ch[-1], ch[-1], cfg, True), Level(ch[-1], ch[-1], cfg, False)])
        self.up = nn.ModuleList(Level(ch[min(i + 1, len(ch) - 1)] + ch[i], ch[i], cfg, attn[i]) for i in range(len(ch)))
        self.norm_out = nn.GroupNorm(cfg.groups, ch[0])
        self.conv_out = nn.Conv2d(ch[0], lat, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, *, views: int, plucker: Tensor, obs_latents: Tensor, obs_mask: Tensor,
                obs_plucker: Tensor, text_tokens: Tensor, text_mask: Tensor, text_pooled: Tensor,
                times: Tensor | None = None, obs_times: Tensor | None = None) -> Tensor:
        """x (S*N, 4, h, w) noisy targets of S sets of N = `views`; t (S*N,); plucker (S*N, 6, h, w);
        obs_latents (S*N, K, 4, h, w), obs_mask (S*N, K) (0 = dropped), obs_plucker (S*N, K, 6, h, w)
        (rows of one set repeat the set's observed views); text_* per target view; a 4D model
        also takes clip times (S*N,) and obs_times (S*N, K)."""
        n_target = views
        sets = x.shape[0] // n_target
        k = obs_latents.shape[1]
        slots = n_target + k
        first = slice(None, None, n_target)  # one row per set for set-level conditioning
        target_in = torch.cat([x, torch.zeros_like(x), torch.zeros_like(x[:, :1]), plucker], 1)
        target_in = target_in.view(sets, n_target, *target_in.shape[1:])
        obs_lat = obs_latents[first] * obs_mask[first][..., None, None, None]
        mask = obs_mask[first][..., None, None, None].expand(-1, -1, 1, *x.shape[-2:])
        obs_in = torch.cat([obs_lat, obs_lat, mask, obs_plucker[first]], 2)
        h = torch.cat([target_in, obs_in], 1).flatten(0, 1)
        emb_set = self.time_mlp(timestep_embedding(t[first], self.cfg.channels[0])) + self.text_proj(text_pooled[first])
        emb = emb_set.repeat_interleave(slots, 0)
        if self.clip_time_mlp is not None:
            if times is None or obs_times is None:
                raise ValueError("a clip-time (4D) model needs `times` and `obs_times`")
            slot_times = torch.cat([times.view(sets, n_target), obs_times[first]], 1).flatten()
            caption = text_pooled[first].repeat_interleave(slots, 0)
            emb = emb + self.clip_time_mlp(torch.cat([clip_time_features(slot_times), caption], 1))
        text = text_tokens[first].repeat_interleave(slots, 0)
        text_mask = text_mask[first].repeat_interleave(slots, 0)
        h = self.conv_in(h)
        skips = []
        for i, level in enumerate(self.down):
            h = level(h, emb, slots, text, text_mask)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        for level in self.mid:
            h = level(h, emb, slots, text, text_mask)
        for i in reversed(range(len(self.up))):
            if h.shape[-1] != skips[i].shape[-1]:
                h = F.interpolate(h, size=skips[i].shape[-2:], mode="nearest")
            h = self.up[i](torch.cat([h, skips[i]], 1), emb, slots, text, text_mask)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out.view(sets, slots, *out.shape[1:])[:, :n_target].flatten(0, 1)

    # ---- folder convention: config.json + model.safetensors --------------------------------

    def save_pretrained(self, folder: Path, dtype: torch.dtype = torch.float32) -> None:
        save_folder(self, self.cfg, folder, dtype)

    @classmethod
    def from_pretrained(cls, folder: Path) -> MultiViewDenoiser:
        return load_folder(folder, cls, MVConfig, "multi-view model")
