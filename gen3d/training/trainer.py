"""The shared trainer: AdamW with warm-up + cosine decay, EMA, checkpoint/resume, loss curve, DDP.

A training stage supplies `loss_fn(net, step) -> Tensor` and the trainer does the rest inside
the job runner's checkpointed step loop (`StageContext.steps`), so an interrupted run resumes
with the same model, EMA, optimiser, RNG and data order. The data order is a pure function of
(seed, step) (`batch_indices`), which is why no sampler state needs saving beyond the step.

Under `torchrun` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo on CPU,
nccl on CUDA); each rank takes its slice of every global batch (`gen3d.training.distributed`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageDraw
from torch import Tensor, nn

from gen3d.io import atomic_output
from gen3d.training.distributed import rank_and_world


@dataclass
class TrainOptimConfig:
    steps: int = 1000
    batch: int = 16  # global batch (items: images for the autoencoder, view sets for the diffusion model)
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # the cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 200  # steps between checkpoints
    log_every: int = 10  # steps between progress events


# ---- data order ---------------------------------------------------------------------------

def batch_indices(n_items: int, batch: int, step: int, seed: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """This rank's items of global batch `step`: consecutive slices through per-epoch permutations
    seeded by (seed, epoch), so any step's batch is known without replaying earlier ones."""
    start = step * batch
    picked: list[np.ndarray] = []
    while sum(len(p) for p in picked) < batch:
        epoch, offset = divmod(start, n_items)
        perm = np.random.default_rng([seed, epoch]).permutation(n_items)
        take = perm[offset:offset + batch - sum(len(p) for p in picked)]
        picked.append(take)
        start += len(take)
    indices = np.concatenate(picked)
    per_rank = batch // world
    return indices[rank * per_rank:(rank + 1) * per_rank]


# ---- EMA ----------------------------------------------------------------------------------

class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers (float32),
    with the usual warm-up decay min(decay, (1 + n) / (10 + n)) so early averages are not stale."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[key].lerp_(value.float(), 1 - decay)
            else:
                self.shadow[key].copy_(value)
        self.updates += 1

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self.updates = int(state["updates"])


# ---- trainer ------------------------------------------------------------------------------

def _lr_factor(cfg: TrainOptimConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


class Trainer:
    """One model's optimiser, schedule, EMA and loss history; `step` does one update."""

    def __init__(self, model: nn.Module, cfg: TrainOptimConfig):
        self.model, self.cfg = model, cfg
        self.net = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_factor(cfg))
        self.ema = EMA(model, cfg.ema_decay)
        self.losses: list[float] = []

    def step(self, loss_fn: Callable[[nn.Module], Tensor]) -> float:
        self.model.train()
        loss = loss_fn(self.net)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model)
        value = float(loss.detach())
        if dist.is_initialized():  # the logged loss is the global batch's
            reduced = torch.tensor([value])
            dist.all_reduce(reduced)
            value = float(reduced) / dist.get_world_size()
        self.losses.append(value)
        return value

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "losses": torch.tensor(self.losses, dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.losses = state["losses"].tolist()

    def ema_model(self, factory: Callable[[], nn.Module]) -> nn.Module:
        """A fresh model (from `factory`) holding the EMA weights, in eval mode."""
        model = factory()
        self.ema.copy_to(model)
        return model.eval()


def fit(ctx, trainer: Trainer, loss_fn: Callable[[nn.Module, int], Tensor],
        on_log: Callable[[int], dict] | None = None) -> None:
    """Run `trainer` to `cfg.steps` inside the stage's checkpointed loop (`ctx.steps`), emitting a
    progress event with the mean loss every `log_every` steps (plus `on_log(step)`'s fields)."""
    cfg = trainer.cfg
    rank, _ = rank_and_world()
    steps = ctx.steps(cfg.steps, every=cfg.checkpoint_every, state=trainer.state_dict, restore=trainer.load_state_dict)
    for step in steps:
        trainer.step(lambda net, step=step: loss_fn(net, step))
        if rank == 0 and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            recent = trainer.losses[-cfg.log_every:]
            extra = on_log(step + 1) if on_log is not None else {}
            ctx.event(step + 1, cfg.steps, loss=round(float(np.mean(recent)), 6),
                      lr=trainer.scheduler.get_last_lr()[0], **extra)


# ---- loss curve ---------------------------------------------------------------------------

def smooth(values: list[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    v = np.asarray(values, dtype=np.float64)
    csum = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def save_loss_curve(losses: list[float], path: Path, title: str, size: tuple[int, int] = (640, 360)) -> Path:
    """A PNG of the (smoothed, log-scale) training loss, drawn with PIL so no plotting stack is needed."""
    width, height = size
    margin = 48
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([margin, 16, width - 16, height - margin], outline="black")
    draw.text((margin, 2), title, fill="black")
    if losses:
        curve = np.log10(np.maximum(smooth(losses, max(1, len(losses) // 50)), 1e-12))
        lo, hi = float(curve.min()), float(curve.max())
        hi = hi if hi > lo else lo + 1.0
        xs = margin + np.arange(len(curve)) / max(1, len(curve) - 1) * (width - 16 - margin)
        ys = 16 + (hi - curve) / (hi - lo) * (height - margin - 16)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(30, 90, 200), width=2)
        draw.text((2, 16), f"{10 ** hi:.3g}", fill="black")
        draw.text((2, height - margin - 10), f"{10 ** lo:.3g}", fill="black")
        draw.text((margin, height - margin + 6), f"step 0 .. {len(losses)} (log loss, smoothed)", fill="black")
    with atomic_output(Path(path)) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
