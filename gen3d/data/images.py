"""Image files in, float tensors out: every PNG/JPEG mode, EXIF orientation, and bad files as UserError.

Readers call these so that one broken or odd file in a capture gives the same one-line message
naming that file, whatever the scene format.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from gen3d.errors import UserError
from gen3d.io import atomic_output

MAX_PIXELS = 50_000_000
"""Larger images are refused before decoding: a 50 MP float RGBA image alone needs 800 MB."""

_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS_SWAPPING_AXES = {5, 6, 7, 8}
_SIXTEEN_BIT_GREY = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
# Pillow raises these for undecodable data; zlib.error comes out of damaged PNG streams.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError)


def _open(path: Path) -> Image.Image:
    """Open lazily (header only) and refuse missing, empty, non-image and oversized files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: image file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower
            image = Image.open(path)
    except Image.DecompressionBombError:
        raise UserError(f"{path}: image is too large (over {MAX_PIXELS // 1_000_000} megapixels)") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file Pillow can read") from None
    except _DECODE_ERRORS as exc:
        raise UserError(f"{path}: cannot read image ({exc})") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise UserError(
            f"{path}: image is {width}x{height} ({width * height / 1e6:.0f} megapixels), "
            f"over the {MAX_PIXELS // 1_000_000} megapixel limit"
        )
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation, without decoding: Pillow only sees a PNG's EXIF chunk early if it precedes the pixels."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    return image.getexif().get(_EXIF_ORIENTATION, 1)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as displayed (EXIF rotation applied), read from the header without decoding."""
    with _open(path) as image:
        width, height = image.size
        if _orientation(image) in _ORIENTATIONS_SWAPPING_AXES:
            width, height = height, width
    return width, height


def has_alpha(path: Path) -> bool:
    """Whether the file carries transparency (an alpha channel or a transparent palette entry), from its header."""
    with _open(path) as image:
        return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _to_array(image: Image.Image) -> np.ndarray:
    """(H, W, 3 or 4) float32 in [0, 1]; 16-bit greyscale keeps its precision, palettes expand."""
    if image.mode in _SIXTEEN_BIT_GREY:
        grey = np.asarray(image).astype(np.float32) / 65535.0
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=-1)
    if image.mode == "F":
        return np.repeat(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)[..., None], 3, axis=-1)
    # Pillow decodes 16-bit colour PNGs to 8 bits per channel; that is its documented behaviour.
    mode = "RGBA" if image.has_transparency_data else "RGB"
    return np.asarray(image.convert(mode), dtype=np.float32) / 255.0


def read_image(path: Path) -> Tensor:
    """Decode an image file to (H, W, C) float32 in [0, 1]: C is 4 (straight RGBA) when it has transparency, else 3."""
    with _open(path) as image:
        try:
            if _orientation(image) != 1:
                image = ImageOps.exif_transpose(image)
            array = _to_array(image)
        except _DECODE_ERRORS as exc:
            raise UserError(f"{path}: cannot decode image ({exc})") from None
    return torch.from_numpy(np.ascontiguousarray(array))


def premultiply(image: Tensor) -> Tensor:
    """Straight to premultiplied RGBA, in place; premultiplied colour can be resized without halos."""
    if image.shape[-1] == 4:
        image[..., :3] *= image[..., 3:]
    return image


def composite(image: Tensor, background: tuple[float, float, float]) -> tuple[Tensor, Tensor | None]:
    """Premultiplied RGBA over `background`: (RGB, alpha (H, W, 1)); opaque RGB passes through as (RGB, None)."""
    if image.shape[-1] == 3:
        return image, None
    rgb, alpha = image[..., :3], image[..., 3:]
    return rgb + torch.tensor(background, dtype=image.dtype) * (1.0 - alpha), alpha


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W, C) to `size` = (width, height): area averaging when shrinking (antialiased), bilinear otherwise."""
    width, height = size
    in_height, in_width, channels = image.shape
    if (in_width, in_height) == (width, height):
        return image
    if in_width % width == 0 and in_height % height == 0:  # whole blocks: exact mean, no resampling
        fy, fx = in_height // height, in_width // width
        return image.reshape(height, fy, width, fx, channels).mean(dim=(1, 3))
    batch = image.permute(2, 0, 1)[None]
    if width <= in_width and height <= in_height:
        out = F.interpolate(batch, size=(height, width), mode="area")
    else:
        out = F.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).contiguous()


def save_png(image: Tensor, path: Path) -> None:
    """An (H, W, 3 or 4) image in [0, 1] as an 8-bit PNG, written atomically."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    with atomic_output(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def read_png(path: Path) -> Tensor:
    """An 8-bit PNG of our own (saved by `save_png`) as float (H, W, C) in [0, 1]."""
    return torch.from_numpy(np.array(Image.open(path))).float() / 255
