"""A space-time radiance field (K-planes style) for objects that move or deform over a time t in [0, 1].

Why this shape: the static field's spatial encoding (tri-plane, hash grid or frequency; for the
tri-plane these are K-planes' xy, xz and yz planes) holds the object in space, and three space-time
planes (xt, yt, zt) multiply its features channel by channel, the way K-planes combines its six
planes. Motion is then a modulation of static features, so the density and colour heads are
NerfField's own. The space-time planes start at exactly 1, which makes a fresh space-time field the
static field at every time, and their time axis has a fixed number of nodes, so the field's memory
does not grow with the number of frames it is trained on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen3d.errors import UserError
from gen3d.fields.nerf import FieldConfig, NerfField


@dataclass
class SpacetimeConfig:
    enabled: bool = False  # reconstruction fits a space-time field to images with one time per view
    time_resolution: int = 16  # nodes along t, whatever the number of frames
    space_resolution: int = 32  # nodes along x, y and z of the xt, yt and zt planes
    smoothness_weight: float = 1e-3  # weight of the planes' squared second difference along t


def field_megabytes(module: nn.Module) -> float:
    """Parameter and buffer bytes of a module in MiB (2**20): its memory, whatever the batch."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


class SpacetimeEncoding(nn.Module):
    """Points (N, 4) = (x, y, z, t) in [0, 1]^4 to the spatial encoding's features of (x, y, z)
    times the product of the xt, yt and zt planes' bilinear reads; (N, out_dim)."""

    def __init__(self, spatial: nn.Module, cfg: SpacetimeConfig):
        super().__init__()
        self.spatial = spatial
        self.out_dim = spatial.out_dim
        # (plane, channel, time, space): grid_sample reads the last axis with the first coordinate
        self.planes = nn.Parameter(torch.ones(3, self.out_dim, cfg.time_resolution, cfg.space_resolution))

    def forward(self, u: Tensor) -> Tensor:
        if u.shape[-1] != 4:
            raise ValueError(f"a space-time field reads (N, 4) points (x, y, z, t), got {tuple(u.shape)}; "
                             "use field.at_time(t) for one time")
        g = u.clamp(0.0, 1.0) * 2 - 1
        coords = torch.stack([g[:, [0, 3]], g[:, [1, 3]], g[:, [2, 3]]])[:, None]  # (3, 1, N, 2)
        xt, yt, zt = F.grid_sample(self.planes, coords, mode="bilinear", align_corners=True)[:, :, 0]  # each (C, N)
        return self.spatial(u[:, :3]) * (xt * yt * zt).t()

    def smoothness(self) -> Tensor:
        """Mean squared second difference of the planes along t: penalises acceleration, not motion."""
        p = self.planes
        if p.shape[2] < 3:
            return p.new_zeros(())
        return (p[:, :, 2:] - 2 * p[:, :, 1:-1] + p[:, :, :-2]).square().mean()


class SpacetimeField(NerfField):
    """NerfField over space-time points (N, 4): x, y, z in world units and t in [0, 1].

    `at_time(t)` is the static view that renderers and exporters read.
    """

    def __init__(self, cfg: FieldConfig, spacetime: SpacetimeConfig, aabb: Tensor,
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        for key in ("time_resolution", "space_resolution"):
            if getattr(spacetime, key) < 2:
                raise UserError(f"config key 'spacetime.{key}' must be at least 2, got {getattr(spacetime, key)}")
        super().__init__(cfg, aabb, generator, device)
        self.spacetime = spacetime
        self.encoding = SpacetimeEncoding(self.encoding, spacetime)

    def normalize(self, x: Tensor) -> Tensor:
        """World points (N, 3) to [0, 1]^3 (the occupancy grid's space); space-time points (N, 4) keep their t."""
        if x.shape[-1] == 4:
            return torch.cat([super().normalize(x[:, :3]), x[:, 3:]], -1)
        return super().normalize(x)

    def at_time(self, t: float | Tensor) -> FieldAtTime:
        return FieldAtTime(self, t)

    def regularization(self) -> Tensor:
        """The weighted time-smoothness term a trainer adds to its loss."""
        return self.spacetime.smoothness_weight * self.encoding.smoothness()


class FieldAtTime:
    """A space-time field at time t as a static field (world points (N, 3)): what the volume renderer
    (`RadianceField`), marching cubes and the export code read. t is one float, or (N,) times of the
    N points passed to each call (the renderer's per-sample times)."""

    def __init__(self, field: SpacetimeField, t: float | Tensor):
        self.field = field
        self.t = t
        self.aabb = field.aabb
        self.world_box = field.world_box

    def _with_time(self, x: Tensor) -> Tensor:
        t = torch.as_tensor(self.t, dtype=x.dtype, device=x.device).expand(len(x))
        return torch.cat([x, t[:, None]], -1)

    def geometry(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.field.geometry(self._with_time(x))

    def density(self, x: Tensor) -> Tensor:
        return self.field.density(self._with_time(x))

    def color(self, features: Tensor, d: Tensor) -> Tensor:
        return self.field.color(features, d)

    def normalize(self, x: Tensor) -> Tensor:
        return self.field.normalize(x)

    def denormalize(self, u: Tensor) -> Tensor:
        return self.field.denormalize(u)

    def __call__(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        return self.field(self._with_time(x), d)
