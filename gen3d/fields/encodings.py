"""Input encodings for neural fields: positions in [0, 1]^3 and unit directions to features.

Why several: on a 2-core CPU the gather-heavy hash grid costs ~20x more per sample than a
tri-plane read through `grid_sample` (one vectorised native kernel, forward and backward), so
the tri-plane is the CPU default and the hash grid is the GPU one (tiny-cuda-nn when present).
`gen3d bench fields` measures them side by side.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# Per-axis multipliers of the spatial hash (Teschner et al.; also used by instant-ngp).
HASH_PRIMES = (1, 2654435761, 805459861)


@dataclass
class HashGridConfig:
    levels: int = 16
    features: int = 2
    log2_table: int = 15
    base_resolution: int = 16
    max_resolution: int = 512
    backend: Literal["auto", "torch", "tcnn"] = "auto"


@dataclass
class TriplaneConfig:
    resolutions: list[int] = field(default_factory=lambda: [64, 128])
    channels: int = 16


@dataclass
class FrequencyConfig:
    frequencies: int = 10


@dataclass
class EncodingConfig:
    kind: Literal["triplane", "hash", "frequency"] = "triplane"
    hash: HashGridConfig = field(default_factory=HashGridConfig)
    triplane: TriplaneConfig = field(default_factory=TriplaneConfig)
    frequency: FrequencyConfig = field(default_factory=FrequencyConfig)


def level_resolutions(cfg: HashGridConfig) -> list[int]:
    """Grid resolution of each level: floor(base * b**l), b spreading base..max geometrically (max included)."""
    if cfg.levels == 1:
        return [cfg.base_resolution]
    growth = math.exp(math.log(cfg.max_resolution / cfg.base_resolution) / (cfg.levels - 1))
    return [int(math.floor(cfg.base_resolution * growth**level + 1e-6)) for level in range(cfg.levels)]


def _corner_indices_and_weights(x: Tensor, res: Tensor, mult: Tensor, hashed: bool, table_size: int,
                                offsets: Tensor) -> tuple[Tensor, Tensor]:
    """Table rows (N, G, 8) and trilinear weights (N, G, 8) of the 8 cell corners at G levels.

    Separable: each axis contributes `coord * mult` for its two corner coordinates, and the 8
    corners combine them by xor (hashed levels) or sum (dense levels) with broadcasting, which
    avoids materialising (N, G, 8, 3) integer corners.
    """
    pos = x[:, None, :] * res[None, :, None]
    cell = torch.minimum(pos.floor(), res[None, :, None] - 1)  # x == 1 stays in the last cell
    frac = pos - cell
    cell = cell.long()
    terms = torch.stack([cell, cell + 1], -1) * mult[None, :, :, None]  # (N, G, 3, 2)
    tx, ty, tz = terms.unbind(2)
    if hashed:
        idx = tx[..., :, None, None] ^ ty[..., None, :, None] ^ tz[..., None, None, :]
    else:
        idx = tx[..., :, None, None] + ty[..., None, :, None] + tz[..., None, None, :]
    idx = (idx & (table_size - 1)) + offsets[None, :, None, None, None]
    w = torch.stack([1 - frac, frac], -1)
    wx, wy, wz = w.unbind(2)
    weights = wx[..., :, None, None] * wy[..., None, :, None] * wz[..., None, None, :]
    n, g = x.shape[0], res.shape[0]
    return idx.reshape(n, g, 8), weights.reshape(n, g, 8)


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding (Mueller et al. 2022) in plain PyTorch.

    Level l has resolution R_l (`level_resolutions`); a point x in [0,1]^3 sits at x * R_l and
    reads the 8 corners c of its cell. A level whose (R_l + 1)^3 corners fit in the table
    indexes densely (cx + cy (R_l+1) + cz (R_l+1)^2); finer levels hash
    (cx * 1) xor (cy * 2654435761) xor (cz * 805459861) mod T. Rows of level l live at
    l * T + index in one (levels * T, features) table, so all levels gather at once.
    Output: (N, levels * features), level-major.
    """

    def __init__(self, cfg: HashGridConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        self.table_size = 2**cfg.log2_table
        self.out_dim = cfg.levels * cfg.features
        table = torch.empty(cfg.levels * self.table_size, cfg.features)
        self.table = nn.Parameter(table.uniform_(-1e-4, 1e-4, generator=generator))
        resolutions = level_resolutions(cfg)
        dense = [(r + 1) ** 3 <= self.table_size for r in resolutions]
        n_dense = sum(dense)
        mult = [(1, r + 1, (r + 1) ** 2) if d else HASH_PRIMES for r, d in zip(resolutions, dense)]
        self.n_dense = n_dense
        self.register_buffer("res", torch.tensor(resolutions, dtype=torch.float32), persistent=False)
        self.register_buffer("mult", torch.tensor(mult, dtype=torch.int64), persistent=False)
        self.register_buffer("offsets", torch.arange(cfg.levels, dtype=torch.int64) * self.table_size,
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x.clamp(0.0, 1.0)
        groups = [(slice(0, self.n_dense), False), (slice(self.n_dense, self.cfg.levels), True)]
        idx, weights = [], []
        for levels, hashed in groups:
            if levels.start == levels.stop:
                continue
            i, w = _corner_indices_and_weights(x, self.res[levels], self.mult[levels], hashed,
                                               self.table_size, self.offsets[levels])
            idx.append(i)
            weights.append(w)
        idx, weights = torch.cat(idx, 1), torch.cat(weights, 1)
        # index_select: its backward (index_add) is ~3x faster on CPU than embedding's
        feats = self.table.index_select(0, idx.reshape(-1)).view(*idx.shape, -1)  # (N, L, 8, F)
        return (feats * weights[..., None]).sum(2).reshape(x.shape[0], self.out_dim)


class TcnnHashGridEncoding(nn.Module):
    """The same hash-grid config run by tiny-cuda-nn's fused CUDA kernel (GPU only).

    tiny-cuda-nn places level grids with its own half-cell offset, so values differ from the
    PyTorch backend for the same table; the config and the parameter count are the same.
    """

    def __init__(self, cfg: HashGridConfig):
        super().__init__()
        import tinycudann as tcnn

        resolutions = level_resolutions(cfg)
        growth = (resolutions[-1] / resolutions[0]) ** (1 / max(cfg.levels - 1, 1))
        self.out_dim = cfg.levels * cfg.features
        self.encoding = tcnn.Encoding(3, {
            "otype": "HashGrid", "n_levels": cfg.levels, "n_features_per_level": cfg.features,
            "log2_hashmap_size": cfg.log2_table, "base_resolution": cfg.base_resolution,
            "per_level_scale": growth,
        })

    def forward(self, x: Tensor) -> Tensor:
        return self.encoding(x.clamp(0.0, 1.0)).float()


def tcnn_missing(device: str | torch.device = "cuda") -> str | None:
    """Why tiny-cuda-nn cannot run a field on `device` (None: it can). It only helps on a CUDA device,
    so it is imported lazily, never on the CPU (it is optional and built from source, docs/gpu.md)."""
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if torch.device(device).type != "cuda":
        return "the field is on the CPU"
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return "tinycudann is not installed"
    return None


def tcnn_available(device: str | torch.device = "cuda") -> bool:
    return tcnn_missing(device) is None


class TriplaneEncoding(nn.Module):
    """Three axis-aligned feature planes (xy, xz, yz) at several resolutions.

    A point reads each plane bilinearly (`grid_sample`) and the three reads multiply
    (Hadamard, as in K-planes), which localises features in 3D; scales concatenate.
    Output: (N, len(resolutions) * channels).
    """

    def __init__(self, cfg: TriplaneConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.out_dim = len(cfg.resolutions) * cfg.channels
        self.planes = nn.ParameterList(
            nn.Parameter(torch.empty(3, cfg.channels, r, r).uniform_(0.1, 0.5, generator=generator))
            for r in cfg.resolutions
        )

    def forward(self, x: Tensor) -> Tensor:
        g = x.clamp(0.0, 1.0) * 2 - 1
        coords = torch.stack([g[:, [0, 1]], g[:, [0, 2]], g[:, [1, 2]]])[:, None]  # (3, 1, N, 2)
        feats = []
        for planes in self.planes:
            xy, xz, yz = F.grid_sample(planes, coords, mode="bilinear", align_corners=True)[:, :, 0]  # each (C, N)
            feats.append(xy * xz * yz)
        return torch.cat(feats, 0).t()


class FrequencyEncoding(nn.Module):
    """NeRF positional encoding: x, sin(2^k pi x), cos(2^k pi x) for k < frequencies, x in [-1, 1]."""

    def __init__(self, cfg: FrequencyConfig, in_dim: int = 3):
        super().__init__()
        self.out_dim = in_dim * (1 + 2 * cfg.frequencies)
        self.register_buffer("scales", math.pi * 2.0 ** torch.arange(cfg.frequencies, dtype=torch.float32),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x * 2 - 1
        angles = (x[:, :, None] * self.scales).reshape(x.shape[0], -1)
        return torch.cat([x, torch.sin(angles), torch.cos(angles)], -1)


class SphericalHarmonicsEncoding(nn.Module):
    """Real spherical harmonics of unit directions up to `degree` - 1 (degree**2 outputs, max 16)."""

    def __init__(self, degree: int = 4):
        super().__init__()
        if not 1 <= degree <= 4:
            raise ValueError("spherical harmonics degree must be 1..4")
        self.degree = degree
        self.out_dim = degree**2

    def forward(self, d: Tensor) -> Tensor:
        x, y, z = d.unbind(-1)
        out = [torch.full_like(x, 0.28209479177387814)]
        if self.degree > 1:
            out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
        if self.degree > 2:
            xx, yy, zz = x * x, y * y, z * z
            out += [1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
                    0.94617469575755997 * zz - 0.31539156525251999, -1.0925484305920792 * x * z,
                    0.54627421529603959 * (xx - yy)]
        if self.degree > 3:
            out += [0.59004358992664352 * y * (3 * xx - yy), 2.8906114426405538 * x * y * z,
                    0.45704579946446572 * y * (1 - 5 * zz), 0.3731763325901154 * z * (5 * zz - 3),
                    0.45704579946446572 * x * (1 - 5 * zz), 1.4453057213202769 * z * (xx - yy),
                    0.59004358992664352 * x * (xx - 3 * yy)]
        return torch.stack(out, -1)


def make_position_encoding(cfg: EncodingConfig, generator: torch.Generator | None = None,
                           device: str | torch.device = "cpu") -> nn.Module:
    """The encoding `cfg.kind` names for a field on `device`. Hash grids use tiny-cuda-nn on CUDA when it
    imports (`auto`, `tcnn`);
    a requested `tcnn` that cannot run falls back to the PyTorch grid (same keys) with a one-line notice."""
    if cfg.kind == "triplane":
        return TriplaneEncoding(cfg.triplane, generator)
    if cfg.kind == "frequency":
        return FrequencyEncoding(cfg.frequency)
    backend, missing = cfg.hash.backend, tcnn_missing(device)
    if backend == "torch" or missing is not None:
        if backend == "tcnn":
            print(f"notice: field.encoding.hash.backend is tcnn but {missing}; using the PyTorch hash grid",
                  file=sys.stderr)
        return HashGridEncoding(cfg.hash, generator)
    return TcnnHashGridEncoding(cfg.hash)
