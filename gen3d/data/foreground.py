"""A user's photo of one object -> the RGBA view a prior expects: object cut out, centred, framed.

The foreground comes from the image's own alpha, else from a mask file, else from keying the
background colour estimated on the image border (product shots on a plain backdrop). The object's
bounding box is then centred and scaled to fill `fill` of the frame, which is how ShapeWorld objects
look from the prior's cameras (radius 2.5, vertical FOV 40 degrees: the median object spans 0.68
of the frame), and the result is resized to the prior's resolution.

Everything here runs before a run folder exists, so bad input never leaves one behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gen3d.data.images import premultiply, read_image, resize
from gen3d.errors import UserError


@dataclass
class ForegroundConfig:
    fill: float = 0.7  # the object's larger bounding-box side as a fraction of the frame
    key_tolerance: float = 0.12  # colour distance from the border colour below which a pixel is background
    key_softness: float = 0.06  # distance over which keyed alpha ramps from 0 to 1
    min_coverage: float = 0.002  # fewer foreground pixels than this fraction: no object found


def _border(image: Tensor) -> Tensor:
    """The outermost ring of pixels, (P, C)."""
    return torch.cat([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])


def key_background(rgb: Tensor, cfg: ForegroundConfig) -> Tensor:
    """Alpha (H, W) from the distance to the median border colour: the plain-backdrop case."""
    backdrop = _border(rgb).median(dim=0).values
    distance = (rgb - backdrop).norm(dim=-1) / 3**0.5
    return ((distance - cfg.key_tolerance) / cfg.key_softness).clamp(0, 1)


def read_mask(path: Path, size: tuple[int, int]) -> Tensor:
    """A mask file's coverage (H, W): its alpha if it has one, else its brightness; must match `size`."""
    mask = read_image(path)
    if (mask.shape[1], mask.shape[0]) != size:
        raise UserError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is {size[0]}x{size[1]}")
    return mask[..., 3] if mask.shape[-1] == 4 else mask.mean(-1)


def foreground_alpha(image: Tensor, mask_path: Path | None, cfg: ForegroundConfig) -> Tensor:
    """Coverage (H, W) by the first rule that applies: mask file, the image's alpha, keyed border colour."""
    if mask_path is not None:
        return read_mask(mask_path, (image.shape[1], image.shape[0]))
    if image.shape[-1] == 4 and bool((image[..., 3] < 1).any()):
        return image[..., 3]
    return key_background(image[..., :3], cfg)


def frame_object(rgba: Tensor, fill: float, size: int, where: Path) -> Tensor:
    """Straight RGBA (H, W, 4) -> straight RGBA (size, size, 4) with the object's bounding box centred
    and its larger side spanning `fill` of the frame."""
    ys, xs = torch.nonzero(rgba[..., 3] > 0.5, as_tuple=True)
    if len(ys) == 0:
        raise UserError(f"{where}: no foreground object found")
    top, bottom, left, right = ys.min().item(), ys.max().item() + 1, xs.min().item(), xs.max().item() + 1
    side = max(round(max(bottom - top, right - left) / fill), 1)
    cy, cx = (top + bottom) // 2, (left + right) // 2
    canvas = torch.zeros(side, side, 4)
    y0, x0 = cy - side // 2, cx - side // 2  # the square's corner in image coordinates
    h, w = rgba.shape[:2]
    sy, sx = max(y0, 0), max(x0, 0)
    ey, ex = min(y0 + side, h), min(x0 + side, w)
    canvas[sy - y0:ey - y0, sx - x0:ex - x0] = premultiply(rgba[sy:ey, sx:ex].clone())
    small = resize(canvas, (size, size))
    alpha = small[..., 3:]
    return torch.cat([(small[..., :3] / alpha.clamp_min(1e-6)).clamp(0, 1) * (alpha > 0), alpha], -1)


def prepare_image(path: Path, mask_path: Path | None, size: int, cfg: ForegroundConfig | None = None) -> Tensor:
    """The user's image as the prior's observed view: straight RGBA (4, size, size) in [0, 1].

    Raises UserError naming the file for unreadable images or masks and images with no object.
    """
    cfg = cfg or ForegroundConfig()
    path = Path(path)
    image = read_image(path)
    alpha = foreground_alpha(image, None if mask_path is None else Path(mask_path), cfg)
    if float((alpha > 0.5).float().mean()) < cfg.min_coverage:
        raise UserError(f"{mask_path or path}: no foreground object found (give a mask with --mask, or "
                        "an image with transparency or a plain background)")
    rgba = torch.cat([image[..., :3], alpha[..., None]], -1)
    return frame_object(rgba, cfg.fill, size, path).permute(2, 0, 1).contiguous()
