"""The radiance field: a density head and a (optionally view-dependent) colour head.

Positions are world points; the field maps them into [0, 1]^3 itself (the scene box, the
contracted unbounded space, or the perspective space of a forward-facing capture), so renderers
and trainers only deal in world coordinates.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from gen3d.cameras import Cameras, unproject
from gen3d.fields.encodings import (
    EncodingConfig,
    SphericalHarmonicsEncoding,
    TcnnHashGridEncoding,
    make_position_encoding,
)


@dataclass
class FieldConfig:
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    hidden: int = 64
    layers: int = 1  # hidden layers of the density MLP
    geo_features: int = 15
    color_hidden: int = 64
    view_dependent: bool = True
    sh_degree: int = 4
    # Where the grid lives. "box": the aabb, linearly; "contract" (unbounded scenes): the aabb stays
    # linear, all space outside squashes around it; "ndc" (forward-facing captures): the aabb is in
    # perspective coordinates (x/-z, y/-z, 1/-z) of a camera at the origin looking down -z, so cells
    # shrink with depth like pixels do (NeRF's NDC). None: the pipeline picks from the scene (box without one).
    space: Literal["box", "contract", "ndc"] | None = None
    density_bias: float = 0.0  # added before exp: negative values start the scene emptier


def contract(x: Tensor) -> Tensor:
    """mip-NeRF 360 contraction with the L-inf norm: the unit cube stays, the rest of space maps into [-2, 2]^3."""
    mag = x.abs().amax(-1, keepdim=True).clamp_min(1e-6)
    return torch.where(mag <= 1, x, (2 - 1 / mag) * (x / mag))


def uncontract(y: Tensor) -> Tensor:
    """Inverse of `contract` on [-2, 2]^3 (the outer shell is clamped just inside 2)."""
    mag = y.abs().amax(-1, keepdim=True).clamp(1e-6, 2 - 1e-3)
    return torch.where(mag <= 1, y, y / (mag * (2 - mag)))


def perspective(x: Tensor) -> Tensor:
    """World points to (x/-z, y/-z, 1/-z) of a camera at the origin looking down -z: straight lines
    stay straight, evenly spaced values of the last coordinate are evenly spaced in inverse depth."""
    inverse_depth = 1 / (-x[..., 2:]).clamp_min(1e-6)
    return torch.cat([x[..., :2] * inverse_depth, inverse_depth], -1)


def unperspective(w: Tensor) -> Tensor:
    """Inverse of `perspective` (inverse depths clamped to be positive)."""
    depth = 1 / w[..., 2:].clamp_min(1e-6)
    return torch.cat([w[..., :2] * depth, -depth], -1)


def perspective_box(cameras: Cameras, near: float, far: float, margin: float = 0.05) -> Tensor:
    """(2, 3) box in `perspective` coordinates around every camera's view between the near and far
    depths, grown by `margin` of its size on each side: the grid of an "ndc" field."""
    w, h = cameras.width, cameras.height
    pixels = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h], [w / 2, h / 2]], dtype=cameras.c2w.dtype)
    points = perspective(torch.cat([unproject(pixels, depth, cameras).reshape(-1, 3) for depth in (near, far)]))
    lo, hi = points.amin(0), points.amax(0)
    pad = margin * (hi - lo)
    return torch.stack([lo - pad, hi + pad]).float()


def mlp(dims: list[int], generator: torch.Generator | None) -> nn.Sequential:
    """Linear layers with ReLU between them, initialised from `generator` (reproducible)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        linear = nn.Linear(a, b)
        nn.init.kaiming_uniform_(linear.weight, nonlinearity="relu", generator=generator)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TcnnMLP(nn.Module):
    """tiny-cuda-nn's fused MLP with `mlp`'s layer widths (ReLU between, linear output), paired with
    its hash grid on CUDA; its half-precision output comes back as float32."""

    def __init__(self, dims: list[int]):
        super().__init__()
        import tinycudann as tcnn

        hidden = dims[1:-1]
        fused = len(set(hidden)) == 1 and hidden[0] in (16, 32, 64, 128)  # what the fully fused kernel supports
        self.network = tcnn.Network(dims[0], dims[-1], {
            "otype": "FullyFusedMLP" if fused else "CutlassMLP", "activation": "ReLU", "output_activation": "None",
            "n_neurons": hidden[0], "n_hidden_layers": len(hidden)})

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x).float()


MAX_LOG_DENSITY = 30.0  # densities stop at exp(30): opaque in any step, and no float overflow to inf


class TruncExp(torch.autograd.Function):
    """exp with the gradient clamped at exp(15): stable densities early in training (instant-ngp).
    The value stops at exp(MAX_LOG_DENSITY): an infinite density makes compositing NaN."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x.clamp(max=MAX_LOG_DENSITY))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15))


class NerfField(nn.Module):
    """sigma(x) >= 0 and rgb(x, d) in [0, 1] for world points x and unit directions d."""

    def __init__(self, cfg: FieldConfig, aabb: Tensor, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu"):
        """`device`: where the field will run; on CUDA the hash grid may be tiny-cuda-nn's (then with its
        fused MLPs). Everything else is built on the CPU and moved with `.to(device)`."""
        super().__init__()
        self.cfg = cfg
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3), persistent=False)
        self.encoding = make_position_encoding(cfg.encoding, generator, device)
        fused = isinstance(self.encoding, TcnnHashGridEncoding)  # one backend: grid and MLPs on tiny-cuda-nn
        make_mlp = TcnnMLP if fused else functools.partial(mlp, generator=generator)
        self.density_mlp = make_mlp([self.encoding.out_dim] + [cfg.hidden] * cfg.layers + [1 + cfg.geo_features])
        self.dir_encoding = SphericalHarmonicsEncoding(cfg.sh_degree) if cfg.view_dependent else None
        color_in = cfg.geo_features + (self.dir_encoding.out_dim if self.dir_encoding else 0)
        self.color_mlp = make_mlp([color_in, cfg.color_hidden, 3])

    @property
    def space(self) -> str:
        return self.cfg.space or "box"

    def normalize(self, x: Tensor) -> Tensor:
        """World points to the encoding's [0, 1]^3 (the aabb fills it, or its inner half when contracting)."""
        lo, hi = self.aabb
        if self.space == "contract":
            return (contract((2 * x - lo - hi) / (hi - lo)) + 2) / 4
        if self.space == "ndc":
            x = perspective(x)
        return (x - lo) / (hi - lo)

    def denormalize(self, u: Tensor) -> Tensor:
        """The encoding's [0, 1]^3 back to world points (occupancy grids live in that space)."""
        lo, hi = self.aabb
        if self.space == "contract":
            return (uncontract(u * 4 - 2) * (hi - lo) + lo + hi) / 2
        if self.space == "ndc":
            return unperspective(lo + u * (hi - lo))
        return lo + u * (hi - lo)

    def world_box(self) -> Tensor:
        """(2, 3) world box of the modelled space where it is finite: what meshes are extracted from
        (the aabb; the inner box of a contracted field; the frustum around a perspective box)."""
        if self.space != "ndc":
            return self.aabb
        corners = torch.cartesian_prod(*torch.stack([torch.zeros(3), torch.ones(3)]).T).to(self.aabb)
        points = self.denormalize(corners)
        return torch.stack([points.amin(0), points.amax(0)])

    def encode(self, u: Tensor) -> Tensor:
        """The position encoding of normalised points (a subclass may mask levels, e.g. coarse-to-fine)."""
        return self.encoding(u)

    def density_offset(self, x: Tensor) -> Tensor | float:
        """A fixed pre-activation density added at world points x (a subclass may seed a shape)."""
        return 0.0

    def geometry(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density (N,) and the geometry features (N, geo_features) the colour head reads."""
        h = self.density_mlp(self.encode(self.normalize(x)))
        return TruncExp.apply(h[:, 0] + self.cfg.density_bias + self.density_offset(x)), h[:, 1:]

    def density(self, x: Tensor) -> Tensor:
        return self.geometry(x)[0]

    def color(self, features: Tensor, d: Tensor) -> Tensor:
        if self.dir_encoding is not None:
            features = torch.cat([features, self.dir_encoding(d)], -1)
        return torch.sigmoid(self.color_mlp(features))

    def forward(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        sigma, features = self.geometry(x)
        return sigma, self.color(features, d)
