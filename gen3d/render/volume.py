"""Volume rendering of radiance fields with occupancy-grid empty-space skipping.

Rays march in fixed steps (or steps growing with distance, `cone_angle`, for unbounded scenes, or
even in inverse depth for forward-facing captures);
only steps whose occupancy-grid cell is occupied reach the field, packed into one flat batch
with their ray index, so a CPU spends its time in occupied space. Compositing is a per-ray
exclusive cumulative sum on the packed samples. At render time rays march in chunks of steps
and stop once their transmittance falls below `early_stop`.

Space-time fields (with `at_time(t)`, see `gen3d.fields.spacetime`) render with one time per ray;
each sample reads the field at its ray's time, and the occupancy grid covers the union over time.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol

import torch
from torch import Tensor, nn


@dataclass
class OccupancyConfig:
    enabled: bool = True
    resolution: int = 64
    update_every: int = 16
    warmup_steps: int = 64  # every cell counts as occupied until then
    decay: float = 0.95
    threshold: float = 0.01  # a cell is empty when one render step through it has alpha below this
    carve: bool = True  # with alpha masks, empty the cells every training view sees as background


@dataclass
class RenderConfig:
    aabb: list[float] = field(default_factory=lambda: [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5])
    near: float = 0.05
    far: float = 1000.0
    step_size: float = 0.02  # world units between samples (the minimum step with cone_angle > 0)
    cone_angle: float = 0.0  # > 0: step = max(step_size, t * cone_angle) (unbounded scenes)
    max_steps: int = 1024
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)
    background: Literal["fixed", "random", "learned"] = "random"  # random needs alpha, else fixed
    background_color: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    min_weight: float = 1e-4  # samples with a smaller compositing weight skip the colour network
    early_stop: float = 1e-4  # a ray stops when its transmittance drops below this (0: never)
    train_early_stop: bool = True  # training: drop samples behind opaque surfaces after a no-grad density pass
    chunk_steps: int = 8  # render time: steps marched between early-stop checks (fern: half the time of 48)
    disparity_steps: int = 64  # fields in "ndc" space: steps per ray, even in inverse depth from near to far


class RadianceField(Protocol):
    """What the renderer needs from a field (world points x, unit directions d)."""

    def geometry(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density (N,) and features (N, F) that `color` takes."""

    def color(self, features: Tensor, d: Tensor) -> Tensor:
        """RGB (N, 3) in [0, 1]."""

    def density(self, x: Tensor) -> Tensor: ...

    def normalize(self, x: Tensor) -> Tensor:
        """World points to the [0, 1]^3 space the occupancy grid covers."""

    def denormalize(self, u: Tensor) -> Tensor: ...


def at_ray_times(field, times: Tensor | None, ray: Tensor) -> RadianceField:
    """The field itself, or a space-time field at the time of each packed sample's ray."""
    return field if times is None else field.at_time(times[ray])


def ray_aabb(origins: Tensor, dirs: Tensor, aabb: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit distances of rays through the box (2, 3); exit < entry means a miss."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (aabb[0] - origins) * inv, (aabb[1] - origins) * inv
    return torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)


def step_distances(t_start: Tensor, k: Tensor, step: float, cone: float, inverse_step: float = 0.0) -> Tensor:
    """Distance of (fractional) step index k along rays starting at t_start.

    Steps are `step` long until t * cone exceeds `step`, then grow geometrically by (1 + cone):
    a closed form, so all steps of all rays are computed at once. `inverse_step` > 0: steps are
    even in inverse distance instead (1/t falls by it per step; past infinity t is huge).
    """
    if inverse_step > 0:
        return 1 / (1 / t_start - k * inverse_step).clamp_min(1e-9)
    if cone <= 0:
        return t_start + k * step
    t_switch = step / cone
    k_switch = ((t_switch - t_start) / step).clamp_min(0).ceil()
    linear = t_start + k * step
    t_at_switch = t_start + k_switch * step
    geometric = t_at_switch * torch.exp((k - k_switch) * math.log1p(cone))
    return torch.where(k < k_switch, linear, geometric)


def steps_between(t_start: Tensor, t_end: Tensor, step: float, cone: float, inverse_step: float = 0.0) -> Tensor:
    """Inverse of `step_distances`: the (fractional) step index at which rays reach t_end."""
    if inverse_step > 0:
        return (1 / t_start - 1 / t_end) / inverse_step
    if cone <= 0:
        return (t_end - t_start) / step
    k_switch = ((step / cone - t_start) / step).clamp_min(0).ceil()
    t_at_switch = t_start + k_switch * step
    geometric = k_switch + torch.log(t_end / t_at_switch) / math.log1p(cone)
    return torch.where(t_end <= t_at_switch, (t_end - t_start) / step, geometric)


class OccupancyGrid(nn.Module):
    """Which cells of the field's normalised [0, 1]^3 space hold density worth sampling.

    Each update reads the field's density at a jittered point in every cell, keeps a decaying
    maximum (so cells are not dropped on one unlucky read), and marks a cell occupied when that
    exceeds min(threshold / step, mean density).
    """

    def __init__(self, cfg: OccupancyConfig):
        super().__init__()
        self.cfg = cfg
        r = cfg.resolution
        self.register_buffer("density", torch.zeros(r, r, r))
        self.register_buffer("mask", torch.ones(r, r, r, dtype=torch.bool))
        self.register_buffer("hull", torch.ones(r, r, r, dtype=torch.bool))  # cells allowed at all (carving)

    def cell_centers(self) -> Tensor:
        """Normalised centres of all cells (R^3, 3), in the flat order of `mask`."""
        r = self.cfg.resolution
        axis = (torch.arange(r, dtype=torch.float32, device=self.mask.device) + 0.5) / r
        return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)

    def restrict(self, keep: Tensor) -> None:
        """Permanently empty the cells where `keep` (R^3,) is false, e.g. outside a visual hull."""
        self.hull.copy_(keep.reshape(self.hull.shape))
        self.mask &= self.hull

    def occupied(self, u: Tensor) -> Tensor:
        """For normalised points (N, 3): inside [0, 1]^3 and in an occupied cell."""
        r = self.cfg.resolution
        cell = (u * r).floor().long()
        inside = ((cell >= 0) & (cell < r)).all(-1)
        cell = cell.clamp(0, r - 1)
        flat = (cell[:, 0] * r + cell[:, 1]) * r + cell[:, 2]
        return inside & self.mask.reshape(-1)[flat]

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], step: float, generator: torch.Generator,
               chunk: int = 65536) -> None:
        """Re-read the density of every cell inside the hull; `density_fn` takes normalised points."""
        r = self.cfg.resolution
        cells = self.hull.reshape(-1).nonzero()[:, 0]
        jitter = torch.rand(len(cells), 3, generator=generator, device=cells.device) - 0.5
        points = self.cell_centers()[cells] + jitter / r
        fresh = torch.zeros(r**3, device=cells.device)
        if len(cells):
            fresh[cells] = torch.cat([density_fn(points[i:i + chunk]) for i in range(0, len(points), chunk)])
        self.density.copy_(torch.maximum(self.density * self.cfg.decay, fresh.reshape(r, r, r)))
        threshold = min(self.cfg.threshold / step, self.density.mean().item())
        self.mask.copy_((self.density > threshold) & self.hull)

    def bounds(self) -> Tensor:
        """Normalised box (2, 3) around the occupied cells (empty grid: a degenerate box)."""
        idx = self.mask.nonzero()
        if len(idx) == 0:
            return torch.zeros(2, 3, device=idx.device)
        r = self.cfg.resolution
        return torch.stack([idx.amin(0).float() / r, (idx.amax(0).float() + 1) / r])


class Background(nn.Module):
    """The colour behind the scene: fixed, random per ray while training, or learned."""

    def __init__(self, cfg: RenderConfig):
        super().__init__()
        self.mode = cfg.background
        color = torch.tensor(cfg.background_color, dtype=torch.float32)
        self.register_buffer("color", color, persistent=False)
        if self.mode == "learned":
            self.logit = nn.Parameter(torch.logit(color.clamp(0.01, 0.99)))

    def forward(self, n_rays: int, generator: torch.Generator | None = None) -> Tensor:
        """(n_rays, 3); random colours only in training (when a generator is passed)."""
        if self.mode == "learned":
            return torch.sigmoid(self.logit).expand(n_rays, 3)
        if self.mode == "random" and generator is not None:
            return torch.rand(n_rays, 3, generator=generator, device=self.color.device)
        return self.color.expand(n_rays, 3)


def optical_depth_before(tau: Tensor, ray: Tensor, n_rays: int) -> Tensor:
    """Per packed sample, the summed optical depth of the samples in front of it on its ray.

    `ray` must be sorted (samples of one ray contiguous, front to back). The cumulative sum runs
    in float64: a batch-wide float32 sum would lose the per-ray differences.
    """
    excl = torch.cumsum(tau.double(), 0) - tau
    counts = torch.bincount(ray, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts
    return (excl - excl[first[ray]]).float()


def composite_packed(sigma: Tensor, delta: Tensor, ray: Tensor, n_rays: int, log_t0: Tensor | None = None
                     ) -> tuple[Tensor, Tensor]:
    """Weights T_i (1 - exp(-sigma_i delta_i)) of packed samples, and each ray's summed optical depth.

    `log_t0` (n_rays,) is the log transmittance at which each ray enters (chunked marching).
    """
    tau = sigma * delta
    log_t = -optical_depth_before(tau, ray, n_rays)
    if log_t0 is not None:
        log_t = log_t + log_t0[ray]
    weights = torch.exp(log_t) * (1 - torch.exp(-tau))
    return weights, segment_sum(tau, ray, n_rays)


def segment_sum(values: Tensor, ray: Tensor, n_rays: int) -> Tensor:
    """Sum of packed per-sample values per ray."""
    return torch.zeros(n_rays, *values.shape[1:], dtype=values.dtype, device=values.device).index_add_(0, ray, values)


class VolumeRenderer(nn.Module):
    """Renders rays through a field: rgb, depth, opacity and (on request) normals.

    `generator` given = training: each ray gets a random step offset, and all steps march at
    once (gradients need every sample). Without it, samples sit mid-step and rays march in
    chunks with transmittance early stop.
    """

    def __init__(self, cfg: RenderConfig, space: str = "box"):
        """`space`: the field's (`FieldConfig.space`). Outside "box" rays march from near to far
        (the field covers all of it), in "ndc" space with steps even in inverse depth."""
        super().__init__()
        self.cfg = cfg
        self.space = space
        self.inverse_step = (1 / cfg.near - 1 / cfg.far) / cfg.disparity_steps if space == "ndc" else 0.0
        self.register_buffer("aabb", torch.tensor(cfg.aabb, dtype=torch.float32).reshape(2, 3), persistent=False)
        self.occupancy = OccupancyGrid(cfg.occupancy) if cfg.occupancy.enabled else None
        self.background = Background(cfg)

    def update_occupancy(self, field: RadianceField, step: int, generator: torch.Generator,
                         over_time: bool = False) -> None:
        """Call once per training step; refreshes the grid every `update_every` steps.

        over_time: `field` is a space-time field; each cell reads it at a random time, so with the
        grid's decaying maximum the mask covers where the object is at any time.
        """
        occ = self.cfg.occupancy
        if self.occupancy is None or step % occ.update_every != 0:
            return

        def density(u: Tensor) -> Tensor:
            frame = field.at_time(torch.rand(len(u), generator=generator, device=u.device)) if over_time else field
            return frame.density(field.denormalize(u))

        self.occupancy.update(density, self.cfg.step_size, generator)
        if step < occ.warmup_steps:
            self.occupancy.mask.copy_(self.occupancy.hull)

    def _march_box(self, field: RadianceField) -> Tensor | None:
        """World box rays are clipped to: the occupied cells' bounds, or the scene box."""
        if self.space != "box":
            return None
        if self.occupancy is None:
            return self.aabb
        u = self.occupancy.bounds()
        return field.denormalize(u)

    def _spacing(self) -> tuple[float, float, float]:
        """`step_distances`' spacing arguments."""
        return self.cfg.step_size, self.cfg.cone_angle, self.inverse_step

    def render_rays(self, field: RadianceField, origins: Tensor, dirs: Tensor, background: Tensor,
                    generator: torch.Generator | None = None, normals: bool = False,
                    times: Tensor | None = None) -> dict[str, Tensor]:
        """Rays (R, 3) to rgb (R, 3) over `background` (3,) or (R, 3), depth (R,), opacity (R,), normals (R, 3).

        times (R,): each ray's time in [0, 1] when `field` is a space-time field.
        """
        cfg = self.cfg
        n, dev = origins.shape[0], origins.device
        box = self._march_box(field)
        if box is None:
            t_near = torch.full((n,), cfg.near, device=dev)
            t_far = torch.full((n,), cfg.far, device=dev)
        else:
            t_near, t_far = ray_aabb(origins, dirs, box)
            t_near, t_far = t_near.clamp_min(cfg.near), t_far.clamp_max(cfg.far)
        training = generator is not None
        jitter = torch.rand(n, generator=generator, device=dev) if training else torch.full((n,), 0.5, device=dev)

        out = {"rgb": torch.zeros(n, 3, device=dev), "opacity": torch.zeros(n, device=dev),
               "depth": torch.zeros(n, device=dev)}
        if normals:
            out["normals"] = torch.zeros(n, 3, device=dev)
        log_t = torch.zeros(n, device=dev)
        hit = t_far > t_near
        needed = steps_between(t_near[hit], t_far[hit], *self._spacing()).max().item() + 1 if hit.any() else 0
        total_steps = min(cfg.max_steps, math.ceil(needed))
        alive = hit.nonzero()[:, 0]
        chunk = total_steps if training or cfg.early_stop <= 0 else cfg.chunk_steps
        for k0 in range(0, total_steps, max(chunk, 1)):
            if len(alive) == 0:
                break
            k_count = min(chunk, total_steps - k0)
            self._march_chunk(field, origins, dirs, t_near, t_far, jitter, alive, k0, k_count, log_t, out, normals,
                              times)
            if not training and cfg.early_stop > 0:
                alive = alive[log_t[alive] > math.log(cfg.early_stop)]
        out["rgb"] = out["rgb"] + (1 - out["opacity"])[:, None] * background
        return out

    def _march_chunk(self, field, origins, dirs, t_near, t_far, jitter, rays, k0, k_count, log_t, out, normals,
                     times):
        """March steps [k0, k0 + k_count) of `rays`, accumulating into `out` and `log_t` in place."""
        cfg = self.cfg
        k = torch.arange(k0, k0 + k_count, dtype=torch.float32, device=jitter.device)[None] + jitter[rays, None]
        t = step_distances(t_near[rays, None], k, *self._spacing())
        keep = t < t_far[rays, None]
        if self.occupancy is not None:
            pos = origins[rays, None] + t[..., None] * dirs[rays, None]
            keep = keep & self.occupancy.occupied(field.normalize(pos.reshape(-1, 3))).reshape(keep.shape)
        local, step_idx = keep.nonzero(as_tuple=True)
        if len(local) == 0:
            return
        ray = rays[local]
        t_s = t[local, step_idx]
        t_next = step_distances(t_near[ray], k[local, step_idx] + 1, *self._spacing())
        delta = t_next - t_s
        d = dirs[ray]
        x = origins[ray] + t_s[:, None] * d
        if torch.is_grad_enabled() and cfg.train_early_stop and cfg.early_stop > 0:
            local, ray, t_s, delta, d, x = self._visible(at_ray_times(field, times, ray), x, delta, local, len(rays),
                                                          log_t[rays], (local, ray, t_s, delta, d, x))
        self._shade(field, rays, local, ray, t_s, delta, d, x, log_t, out, normals, times)

    def _shade(self, field, rays, local, ray, t_s, delta, d, x, log_t, out, normals, times):
        """Composite packed samples (sorted by ray, front to back) of `rays` into `out` and `log_t`."""
        cfg = self.cfg
        field = at_ray_times(field, times, ray)
        if normals:
            x = x.detach().requires_grad_(True)
        with torch.enable_grad() if normals else contextlib.nullcontext():
            sigma, geo = field.geometry(x)
        weights, tau_sum = composite_packed(sigma, delta, local, len(rays), log_t[rays])
        # Colour only where it shows: most samples in occupied space are still nearly transparent.
        shown = (weights.detach() > cfg.min_weight).nonzero()[:, 0]
        rgb = field.color(geo[shown], d[shown])
        out["rgb"] = out["rgb"].index_add(0, ray[shown], weights[shown, None] * rgb)
        out["opacity"] = out["opacity"].index_add(0, ray, weights)
        out["depth"] = out["depth"].index_add(0, ray, weights * t_s)
        if normals:
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(sigma.sum(), x, create_graph=torch.is_grad_enabled(), retain_graph=True)
            nrm = -torch.nn.functional.normalize(grad, dim=-1)
            out["normals"] = out["normals"].index_add(0, ray, weights[:, None] * nrm)
        log_t[rays] = log_t[rays] - tau_sum.detach()

    def _visible(self, field, x, delta, local, n_local, log_t0, samples):
        """Keep the samples a no-grad density pass says are still visible (transmittance >= early_stop).

        The costly forward and backward pass then runs only on samples in front of opaque surfaces;
        dropped samples lie behind them, so the kept ones are a prefix of each ray.
        """
        with torch.no_grad():
            depth_before = optical_depth_before(field.density(x) * delta, local, n_local)
            visible = (log_t0[local] - depth_before) > math.log(self.cfg.early_stop)
        return tuple(v[visible] for v in samples)
