"""The 4D prior's motion head: (caption, clip time) -> the object's pose, and rays in the object's frame.

Where a moving object is at time t is a small function of what the caption says it does; learning
it inside the image denoiser through a time embedding proved slow (3,000 fine-tuning steps moved
nothing). So the 4D prior factors motion CAT4D-style into (1) a global similarity pose per view,
predicted by this small MLP from the pooled caption and Fourier features of t, trained on
ShapeWorld's ground-truth poses, and (2) the multi-view denoiser seeing every view's Plücker rays
in the object's frame at that view's time (`object_frame_plucker`), so the static object it knows
appears moved, turned and scaled; a per-view time embedding in the denoiser handles what a pose
cannot (the snowman's turning head).

Pose: (offset x, y, z, yaw about z, log scale) mapping the static object to the world:
world = offset + R(yaw) * exp(log scale) * object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from gen3d.cameras import Cameras, generate_rays
from gen3d.models.multiview import CLIP_TIME_FREQUENCIES, clip_time_features
from gen3d.models.pretrained import load_folder, save_folder

POSE_DIM = 5


@dataclass
class MotionConfig:
    text_dim: int = 384
    hidden: int = 256


class MotionHead(nn.Module):
    """pose(pooled caption (N, text_dim), t (N,)) -> (N, 5)."""

    def __init__(self, cfg: MotionConfig):
        super().__init__()
        self.cfg = cfg
        self.mlp = nn.Sequential(nn.Linear(cfg.text_dim + 2 * CLIP_TIME_FREQUENCIES, cfg.hidden), nn.SiLU(),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, POSE_DIM))

    def forward(self, text_pooled: Tensor, t: Tensor) -> Tensor:
        return self.mlp(torch.cat([text_pooled.float(), clip_time_features(t)], 1))

    def save_pretrained(self, folder: Path) -> None:
        save_folder(self, self.cfg, folder)

    @classmethod
    def from_pretrained(cls, folder: Path) -> MotionHead:
        return load_folder(folder, cls, MotionConfig, "motion head")


def object_frame_plucker(cams: Cameras, poses: Tensor) -> Tensor:
    """Plücker maps (N, 6, H, W) of each camera's rays expressed in the frame of the object posed by
    `poses` (N, 5): the inverse similarity applied to ray origins and directions."""
    origins, dirs = generate_rays(cams)  # (N, H, W, 3)
    offset, yaw, log_scale = poses[:, :3], poses[:, 3], poses[:, 4]
    c, s = torch.cos(yaw), torch.sin(yaw)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    rot = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], 1).view(-1, 3, 3)  # object -> world
    # row vectors: v_object = (v_world - offset) @ R / scale
    local_o = torch.einsum("nhwi,nij->nhwj", origins - offset[:, None, None], rot) / log_scale.exp()[:, None, None, None]
    local_d = torch.einsum("nhwi,nij->nhwj", dirs, rot)
    moment = torch.linalg.cross(local_o, local_d, dim=-1)
    return torch.cat([local_d, moment], -1).permute(0, 3, 1, 2).contiguous()


def train_motion_head(text_pooled: Tensor, poses_fn, steps: int, generator: torch.Generator,
                      batch: int = 512, lr: float = 3e-3) -> tuple[MotionHead, list[float]]:
    """Fit a head to ground truth: `text_pooled` (C, text_dim) caption embeddings, `poses_fn(index
    (B,), t (B,)) -> (B, 5)` the true pose of caption `index` at time t. Returns the head and losses."""
    head = MotionHead(MotionConfig(text_dim=text_pooled.shape[1]))
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    losses = []
    for _ in range(steps):
        index = torch.randint(len(text_pooled), (batch,), generator=generator)
        t = torch.rand(batch, generator=generator)
        loss = (head(text_pooled[index], t) - poses_fn(index, t)).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return head.eval(), losses
