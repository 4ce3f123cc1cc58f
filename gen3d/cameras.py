"""Pinhole cameras, rays and camera paths.

Conventions (see docs/CONVENTIONS.md): world z up; camera-to-world matrices in the OpenGL
convention (x right, y up, looking down -z). OpenCV matrices only enter or leave through
`opencv_to_opengl` / `opengl_to_opencv`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

_FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass
class Cameras:
    """A batch of N pinhole cameras sharing one image size.

    c2w: (N, 4, 4) camera-to-world, OpenGL axes. fx, fy, cx, cy: (N,) in pixels, with the
    pixel (i, j) centre at (j + 0.5, i + 0.5).
    """

    c2w: Tensor
    fx: Tensor
    fy: Tensor
    cx: Tensor
    cy: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.c2w.ndim == 2:
            self.c2w = self.c2w[None]
        n = self.c2w.shape[0]
        for name in ("fx", "fy", "cx", "cy"):
            value = torch.as_tensor(getattr(self, name), dtype=self.c2w.dtype, device=self.c2w.device)
            setattr(self, name, value.reshape(-1).expand(n).clone() if value.numel() == 1 else value.reshape(n))

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx) -> "Cameras":
        if isinstance(idx, int):
            idx = [idx]
        return Cameras(self.c2w[idx], self.fx[idx], self.fy[idx], self.cx[idx], self.cy[idx], self.width, self.height)

    @property
    def centers(self) -> Tensor:
        return self.c2w[:, :3, 3]

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras at another image size (intrinsics scaled per axis)."""
        sx, sy = width / self.width, height / self.height
        return Cameras(self.c2w, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    def to(self, device) -> "Cameras":
        return Cameras(*(t.to(device) for t in (self.c2w, self.fx, self.fy, self.cx, self.cy)), self.width, self.height)

    @staticmethod
    def cat(items: list["Cameras"]) -> "Cameras":
        first = items[0]
        if any((c.width, c.height) != (first.width, first.height) for c in items):
            raise ValueError("cannot concatenate cameras of different image sizes")
        return Cameras(*(torch.cat([getattr(c, k) for c in items]) for k in ("c2w", "fx", "fy", "cx", "cy")),
                       first.width, first.height)

    @property
    def fov_y(self) -> Tensor:
        """Vertical field of view in radians."""
        return 2 * torch.atan(0.5 * self.height / self.fy)


def focal_from_fov(fov: float, size: int) -> float:
    """Focal length in pixels for a field of view (radians) spanning `size` pixels."""
    return 0.5 * size / math.tan(0.5 * fov)


def from_fov(c2w: Tensor, fov_y_deg: float, width: int, height: int) -> Cameras:
    """Cameras with square pixels and the principal point at the image centre."""
    f = focal_from_fov(math.radians(fov_y_deg), height)
    return Cameras(c2w, torch.tensor(f), torch.tensor(f), torch.tensor(width / 2), torch.tensor(height / 2), width, height)


def opencv_to_opengl(c2w: Tensor) -> Tensor:
    """OpenCV camera-to-world (x right, y down, looking down +z) to OpenGL; its own inverse."""
    return c2w @ _FLIP_YZ.to(c2w)


opengl_to_opencv = opencv_to_opengl


def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """OpenGL camera-to-world matrices for cameras at `eye` (..., 3) looking at `target` (default origin)."""
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target, dtype=eye.dtype).expand_as(eye)
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else torch.as_tensor(up, dtype=eye.dtype)
    back = torch.nn.functional.normalize(eye - target, dim=-1)  # camera +z points away from the target
    right = torch.linalg.cross(up.expand_as(back), back, dim=-1)
    # Looking straight along `up`: pick any perpendicular right vector.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0]).expand_as(right), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.linalg.cross(back, right, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = right, true_up, back, eye
    c2w[..., 3, 3] = 1.0
    return c2w


def spherical_to_position(radius, elevation_deg, azimuth_deg) -> Tensor:
    """Points on a sphere: azimuth from +x towards +y, elevation above the xy plane (z up)."""
    el = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float32))
    az = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float32))
    r = torch.as_tensor(radius, dtype=torch.float32)
    return torch.stack([r * torch.cos(el) * torch.cos(az), r * torch.cos(el) * torch.sin(az), r * torch.sin(el)], -1)


def orbit(elevations_deg, azimuths_deg, radius: float, fov_y_deg: float, width: int, height: int) -> Cameras:
    """Cameras on a sphere around the origin, looking at it, z up."""
    el = torch.as_tensor(elevations_deg, dtype=torch.float32).reshape(-1)
    az = torch.as_tensor(azimuths_deg, dtype=torch.float32).reshape(-1)
    el, az = torch.broadcast_tensors(el, az)
    return from_fov(look_at(spherical_to_position(radius, el, az)), fov_y_deg, width, height)


def turntable(n: int, elevation_deg: float, radius: float, fov_y_deg: float, width: int, height: int) -> Cameras:
    """`n` cameras evenly spaced in azimuth (starting at +x) at one elevation."""
    az = torch.arange(n, dtype=torch.float32) * (360.0 / n)
    return orbit(torch.full((n,), float(elevation_deg)), az, radius, fov_y_deg, width, height)


def camera_directions(cams: Cameras) -> Tensor:
    """Unnormalised camera-space ray directions through pixel centres, (N, H, W, 3), OpenGL axes."""
    j = torch.arange(cams.width, dtype=cams.c2w.dtype, device=cams.c2w.device) + 0.5
    i = torch.arange(cams.height, dtype=cams.c2w.dtype, device=cams.c2w.device) + 0.5
    ii, jj = torch.meshgrid(i, j, indexing="ij")
    x = (jj[None] - cams.cx[:, None, None]) / cams.fx[:, None, None]
    y = -(ii[None] - cams.cy[:, None, None]) / cams.fy[:, None, None]
    return torch.stack([x, y, -torch.ones_like(x)], dim=-1)


def generate_rays(cams: Cameras) -> tuple[Tensor, Tensor]:
    """World-space ray origins and unit directions through every pixel centre, each (N, H, W, 3)."""
    d_cam = camera_directions(cams)
    rot = cams.c2w[:, None, None, :3, :3]
    dirs = torch.nn.functional.normalize((rot @ d_cam[..., None])[..., 0], dim=-1)
    origins = cams.centers[:, None, None, :].expand_as(dirs)
    return origins, dirs


def plucker(cams: Cameras) -> Tensor:
    """Plücker ray coordinates (direction, origin x direction) per pixel, (N, 6, H, W)."""
    origins, dirs = generate_rays(cams)
    moment = torch.linalg.cross(origins, dirs, dim=-1)
    return torch.cat([dirs, moment], dim=-1).permute(0, 3, 1, 2).contiguous()


def project(points: Tensor, cams: Cameras) -> tuple[Tensor, Tensor]:
    """World points (P, 3) to pixel coordinates (N, P, 2) (x right, y down) and depth along -z (N, P)."""
    w2c = torch.linalg.inv(cams.c2w)
    p = torch.cat([points, torch.ones_like(points[:, :1])], -1)
    pc = (w2c[:, None] @ p[None, :, :, None])[..., 0]
    depth = -pc[..., 2]
    u = cams.fx[:, None] * pc[..., 0] / depth + cams.cx[:, None]
    v = -cams.fy[:, None] * pc[..., 1] / depth + cams.cy[:, None]
    return torch.stack([u, v], -1), depth


def unproject(pixels: Tensor, depth: Tensor | float, cams: Cameras) -> Tensor:
    """Pixel coordinates (P, 2) (x right, y down) at depth along -z to world points (N, P, 3); inverts `project`."""
    depth = torch.as_tensor(depth, dtype=cams.c2w.dtype)
    x = (pixels[None, :, 0] - cams.cx[:, None]) / cams.fx[:, None]
    y = -(pixels[None, :, 1] - cams.cy[:, None]) / cams.fy[:, None]
    p_cam = torch.stack([x, y, -torch.ones_like(x)], -1) * depth[..., None]
    return (cams.c2w[:, None, :3, :3] @ p_cam[..., None])[..., 0] + cams.centers[:, None, :]


def pass_cameras(passes: list[int], elevations: list[float], radius: float, fov_y_deg: float, size: int) -> Cameras:
    """Cameras for views generated in passes: each pass spreads its views evenly in azimuth, later
    passes rotated to fall between earlier ones; elevations cycle through `elevations`."""
    azimuths, elevs = [], []
    for p, count in enumerate(passes):
        for j in range(count):
            azimuths.append(360.0 * (j + p / len(passes)) / count)
            elevs.append(elevations[(j + p) % len(elevations)])
    return orbit(elevs, azimuths, radius, fov_y_deg, size, size)


def random_orbit_set(count: int, elevation_range: list[float], radius: float, fov_y_deg: float, size: int,
                     generator: torch.Generator) -> Cameras:
    """One multi-view set for score distillation: `count` azimuths evenly spaced from a random
    offset, one random elevation in [min, max] degrees shared by the set."""
    lo, hi = elevation_range
    offset, elevation = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    azimuths = [(360.0 * (offset + k / count)) % 360.0 for k in range(count)]
    return orbit([lo + elevation * (hi - lo)] * count, azimuths, radius, fov_y_deg, size, size)


def flat_rays(cams: Cameras) -> tuple[Tensor, Tensor]:
    """Origins and directions (V*H*W, 3) through every pixel centre of `cams`, view after view."""
    origins, dirs = generate_rays(cams)
    return origins.reshape(-1, 3), dirs.reshape(-1, 3)
