"""Fit a radiance field to posed images (the reconstruction engine's core).

`ReconTrainer` owns the field, the renderer (with its occupancy grid), the optimiser and one
seeded generator that every random choice draws from, so `state_dict()` captures everything a
resumed run needs to continue bit-identically.

With one time per view (`times`, and `spacetime.enabled` in the config) the same loop fits a
space-time field (`gen3d.fields.spacetime`) to a moving object: each ray carries its view's time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from gen3d.cameras import Cameras, generate_rays
from gen3d.config import ranged
from gen3d.device import active_device
from gen3d.errors import UserError
from gen3d.fields.nerf import FieldConfig, NerfField
from gen3d.fields.spacetime import SpacetimeConfig, SpacetimeField
from gen3d.recon.appearance import PhotoAppearance
from gen3d.recon.hull import visual_hull
from gen3d.recon.metrics import psnr, ssim
from gen3d.render.volume import RadianceField, RenderConfig, VolumeRenderer


@dataclass
class OptimConfig:
    lr: float = ranged(1e-2, low=0.0)
    eps: float = ranged(1e-15, low=0.0)  # tiny eps: rarely-touched grid entries still move at full rate
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.99])
    final_lr_fraction: float = ranged(0.1, low=0.0, high=1.0)  # lr decays exponentially to lr * this at `steps`


@dataclass
class ReconConfig:
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    spacetime: SpacetimeConfig = dataclasses.field(default_factory=SpacetimeConfig)
    steps: int = ranged(3000, low=0)
    batch_rays: int = ranged(2048, low=1)
    mask_loss_weight: float = ranged(0.0, low=0.0)  # weight of (opacity - alpha)^2 where images carry alpha
    render_chunk: int = ranged(16384, low=1)  # rays per chunk when rendering whole images
    threads: int = ranged(0, low=0)  # torch CPU threads (0: as started: OMP_NUM_THREADS, else every core)
    # Learn each photo's exposure and white balance (`gen3d.recon.appearance`); None: the pipeline
    # decides (reconstruct: on for real captures, i.e. scenes without alpha that are not bounded objects).
    appearance: bool | None = None


def pixel_rays(cams: Cameras, view: Tensor, i: Tensor, j: Tensor) -> tuple[Tensor, Tensor]:
    """World origins and unit directions through pixel centres (row i, column j) of the given views.

    Same geometry as `gen3d.cameras.generate_rays`, for a random batch of pixels instead of whole images.
    """
    x = (j + 0.5 - cams.cx[view]) / cams.fx[view]
    y = -(i + 0.5 - cams.cy[view]) / cams.fy[view]
    d_cam = torch.stack([x, y, -torch.ones_like(x)], -1)
    dirs = torch.nn.functional.normalize((cams.c2w[view, :3, :3] @ d_cam[..., None])[..., 0], dim=-1)
    return cams.c2w[view, :3, 3], dirs


def composite_onto(images: Tensor, background: Tensor) -> Tensor:
    """RGB of images (..., 3 or 4) over a background colour (..., 3); RGB images pass through."""
    if images.shape[-1] == 3:
        return images
    alpha = images[..., 3:]
    return images[..., :3] * alpha + background * (1 - alpha)


def premultiplied_with_alpha(images: Tensor, alpha: Tensor | None, background: Tensor) -> tuple[Tensor, Tensor | None]:
    """Colour times coverage (N, H, W, 3) and coverage (N, H, W, 1), from straight RGBA images or from
    RGB images composited onto `background` plus their alpha; RGB alone passes through."""
    if images.shape[-1] == 4:
        a = images[..., 3:]
        return images[..., :3] * a, a
    if alpha is None:
        return images, None
    a = alpha.reshape(*images.shape[:3], 1).float()
    return images - background * (1 - a), a


def view_times(times: Tensor | None, n_views: int, spacetime: bool) -> Tensor | None:
    """Checked per-view times (N,) in [0, 1]; they come exactly with a space-time config."""
    if times is None:
        if spacetime:
            raise UserError("config key 'spacetime.enabled' is true, but the views come without times")
        return None
    if not spacetime:
        raise UserError("views with times need config key 'spacetime.enabled: true'")
    times = torch.as_tensor(times, dtype=torch.float32).reshape(-1)
    if len(times) != n_views or not ((times >= 0) & (times <= 1)).all():
        span = f" in [{times.min().item():.3g}, {times.max().item():.3g}]" if len(times) else ""
        raise UserError(f"times must be one value in [0, 1] per view: {n_views} views, got {len(times)} times{span}")
    return times


class ReconTrainer:
    """Fits a `NerfField` to images in [0, 1] seen by `cameras`.

    images: (N, H, W, 4) straight RGBA, or (N, H, W, 3) RGB composited onto
    `render.background_color`, optionally with `alpha` (N, H, W[, 1]). Coverage lets training carve
    the occupancy grid to the visual hull, composite onto random backgrounds (`render.background:
    random`) and use the mask loss. `view_weights` (N,) scale each view's share of the loss.
    `times` (N,) in [0, 1], required exactly when `spacetime.enabled`: the time each view shows;
    the field is then a `SpacetimeField`. `device` (default: `gen3d.device.active_device()`) is where
    it trains; renders and densities come back on the caller's device.
    """

    def __init__(self, cfg: ReconConfig, images: Tensor, cameras: Cameras, seed: int = 0,
                 view_weights: Tensor | None = None, alpha: Tensor | None = None, times: Tensor | None = None,
                 device: str | torch.device | None = None):
        if images.ndim != 4 or images.shape[-1] not in (3, 4):
            raise UserError(f"training images must be (N, H, W, 3 or 4), got {tuple(images.shape)}")
        if len(cameras) != images.shape[0] or (cameras.height, cameras.width) != tuple(images.shape[1:3]):
            raise UserError(f"{len(cameras)} cameras of {cameras.width}x{cameras.height} do not match "
                            f"images {tuple(images.shape)}")
        if alpha is not None and alpha.numel() != images[..., 0].numel():
            raise UserError(f"alpha {tuple(alpha.shape)} does not match images {tuple(images.shape)}")
        self.times = view_times(times, len(cameras), cfg.spacetime.enabled)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        color = torch.tensor(cfg.render.background_color, dtype=torch.float32)
        self.premultiplied, self.alpha = premultiplied_with_alpha(images.float(), alpha, color)
        self.cameras = cameras
        self.has_alpha = self.alpha is not None
        weights = torch.ones(len(cameras)) if view_weights is None else torch.as_tensor(view_weights, dtype=torch.float32)
        self.view_weights = weights / weights.mean()
        self.generator = torch.Generator().manual_seed(seed)
        aabb, device = torch.tensor(cfg.render.aabb), torch.device(active_device() if device is None else device)
        self.field = (NerfField(cfg.field, aabb, generator=self.generator, device=device) if self.times is None
                      else SpacetimeField(cfg.field, cfg.spacetime, aabb, generator=self.generator, device=device))
        self.renderer = VolumeRenderer(cfg.render, space=self.field.space)
        self.appearance = PhotoAppearance(len(cameras)) if cfg.appearance else None
        self.model = nn.ModuleDict({"field": self.field, "renderer": self.renderer})
        if self.appearance is not None:
            self.model["appearance"] = self.appearance
        self.step_count = 0
        self.skipped_steps = 0  # steps whose loss was not finite (no update)
        if self.has_alpha and self.renderer.occupancy is not None and cfg.render.occupancy.carve:
            self._carve_occupancy()
        self._move_to(device, seed)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                          eps=cfg.optim.eps, fused=True)

    def _move_to(self, device: torch.device, seed: int) -> None:
        """Everything a step touches onto `device`, once the field is initialised and carved on the CPU
        (the same initial field on every device); off the CPU random draws come from a generator there."""
        if device.type == "cpu":
            return
        self.model.to(device)
        self.premultiplied, self.view_weights = self.premultiplied.to(device), self.view_weights.to(device)
        self.alpha = None if self.alpha is None else self.alpha.to(device)
        self.times = None if self.times is None else self.times.to(device)
        self.cameras = self.cameras.to(device)
        self.generator = torch.Generator(device).manual_seed(seed)

    def _carve_occupancy(self) -> None:
        """Empty the cells outside the visual hull. With times, the union over times of each time's
        hull: views of different times see the object in different places, so they must not carve
        each other's object away."""
        grid = self.renderer.occupancy
        centers = self.field.denormalize(grid.cell_centers())
        lo, hi = self.field.world_box()
        half_diagonal = 0.5 * 3**0.5 * ((hi - lo).max().item() / grid.cfg.resolution)
        if self.times is None:
            grid.restrict(visual_hull(centers, half_diagonal, self.cameras, self.alpha[..., 0]))
            return
        keep = torch.zeros(len(centers), dtype=torch.bool)
        for t in self.times.unique():
            views = (self.times == t).nonzero()[:, 0]
            keep |= visual_hull(centers, half_diagonal, self.cameras[views], self.alpha[views, ..., 0])
        grid.restrict(keep)

    def _lr_scale(self) -> float:
        return self.cfg.optim.final_lr_fraction ** min(self.step_count / max(self.cfg.steps, 1), 1.0)

    def _sample_batch(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
        n, h, w = self.premultiplied.shape[:3]
        b = self.cfg.batch_rays
        dev = self.generator.device
        view = torch.randint(n, (b,), generator=self.generator, device=dev)
        i = torch.randint(h, (b,), generator=self.generator, device=dev)
        j = torch.randint(w, (b,), generator=self.generator, device=dev)
        origins, dirs = pixel_rays(self.cameras, view, i.float(), j.float())
        coverage = None if self.alpha is None else self.alpha[view, i, j]
        return origins, dirs, self.premultiplied[view, i, j], coverage, view

    def step(self) -> dict[str, float]:
        """One optimisation step on a random batch of rays; returns the batch loss and PSNR."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.optim.lr * self._lr_scale()
        origins, dirs, premult, coverage, view = self._sample_batch()
        background = self.renderer.background(len(origins), self.generator if self.has_alpha else None)
        target = premult if coverage is None else premult + background * (1 - coverage)
        out = self.renderer.render_rays(self.field, origins, dirs, background, generator=self.generator,
                                        times=None if self.times is None else self.times[view])
        ray_weights = self.view_weights[view]
        rgb = out["rgb"] if self.appearance is None else self.appearance(out["rgb"], view)
        sq_err = (rgb - target).square().mean(-1)
        loss = (ray_weights * sq_err).sum() / ray_weights.sum()
        if self.appearance is not None:
            loss = loss + self.appearance.penalty()
        if self.has_alpha and self.cfg.mask_loss_weight > 0:
            mask_err = (out["opacity"] - coverage[:, 0]).square()
            loss = loss + self.cfg.mask_loss_weight * (ray_weights * mask_err).sum() / ray_weights.sum()
        if self.times is not None:
            loss = loss + self.field.regularization()
        self.optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            self.optimizer.step()
        else:  # one bad batch must not turn every weight into NaN; the step is skipped and counted
            self.skipped_steps += 1
        self.step_count += 1
        self.renderer.update_occupancy(self.field, self.step_count, self.generator, over_time=self.times is not None)
        mse = sq_err.detach().mean().item()
        stats = {"loss": loss.item(), "psnr": -10 * torch.log10(torch.tensor(max(mse, 1e-12))).item()}
        return stats | ({"skipped_steps": self.skipped_steps} if self.skipped_steps else {})

    def train(self, n_steps: int, callback: Callable[[int, dict], bool | None] | None = None) -> None:
        """Run `n_steps` steps; `callback(step, stats)` after each may return True to stop early."""
        for _ in range(n_steps):
            stats = self.step()
            if callback is not None and callback(self.step_count, stats):
                break

    def eval_background(self) -> Tensor:
        """The colour renders and evaluations composite onto (random backgrounds evaluate on the fixed colour)."""
        return self.renderer.background(1)[0].detach()

    def _check_times(self, times) -> None:
        """Space-time trainers render at given times, static ones without (a clear error, not a shape error)."""
        if times is None and self.times is not None:
            raise ValueError("this trainer fits a space-time field: pass the time(s) to render at")
        if times is not None and self.times is None:
            raise ValueError("this trainer fits a static field: it renders without times")

    @torch.no_grad()
    def render_rays(self, origins: Tensor, dirs: Tensor, normals: bool = False,
                    times: Tensor | None = None) -> dict[str, Tensor]:
        """Any rays (R, 3), in chunks, onto the evaluation background: rgb, depth, opacity (and normals).
        A space-time trainer needs each ray's time, `times` (R,)."""
        self._check_times(times)
        background, dev, caller = self.eval_background(), self.premultiplied.device, origins.device
        origins, dirs, times = (None if t is None else t.to(dev) for t in (origins, dirs, times))
        step = self.cfg.render_chunk
        chunks = [self.renderer.render_rays(self.field, origins[s:s + step], dirs[s:s + step], background,
                                            normals=normals, times=None if times is None else times[s:s + step])
                  for s in range(0, len(origins), step)]
        return {key: torch.cat([c[key] for c in chunks]).to(caller) for key in chunks[0]}

    def render(self, cameras: Cameras, normals: bool = False, times: Tensor | float | None = None) -> dict[str, Tensor]:
        """Whole images: rgb (N, H, W, 3), depth and opacity (N, H, W), normals (N, H, W, 3) if asked.
        A space-time trainer renders at `times`: one float for all cameras or (N,), one per camera."""
        origins, dirs = (t.reshape(-1, 3) for t in generate_rays(cameras))
        if times is not None:
            per_camera = torch.as_tensor(times, dtype=torch.float32).expand(len(cameras))
            times = per_camera.repeat_interleave(cameras.height * cameras.width)
        out = self.render_rays(origins, dirs, normals=normals, times=times)
        shape = (len(cameras), cameras.height, cameras.width)
        return {key: value.reshape(*shape, *value.shape[1:]) for key, value in out.items()}

    def evaluate(self, images: Tensor, cameras: Cameras, times: Tensor | float | None = None) -> dict:
        """Mean PSNR and SSIM over held-out views (composited onto the evaluation background) and the renders."""
        renders = self.render(cameras, times=times)["rgb"]
        target = composite_onto(images.float(), self.eval_background().to(images.device))
        return {"psnr": psnr(renders, target).mean().item(), "ssim": ssim(renders, target).mean().item(),
                "renders": renders}

    def field_at(self, time: float | None = None) -> RadianceField:
        """The static field, or the space-time field at `time` (what renderers and mesh export read)."""
        self._check_times(time)
        return self.field if time is None else self.field.at_time(time)

    @torch.no_grad()
    def density(self, points: Tensor, chunk: int = 65536, time: float | None = None) -> Tensor:
        """Field density at world points (N, 3), e.g. for marching cubes; a space-time trainer's at `time`."""
        field, dev = self.field_at(time), self.premultiplied.device
        return torch.cat([field.density(points[s:s + chunk].to(dev)) for s in range(0, len(points), chunk)]
                         ).to(points.device)

    def state_dict(self) -> dict:
        return {"step": self.step_count, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": self.generator.get_state(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))  # absent from older checkpoints
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"])
