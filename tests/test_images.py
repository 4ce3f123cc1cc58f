"""Image loading: every PNG/JPEG mode, EXIF orientation, bad files, compositing and resizing."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from gen3d.data.images import MAX_PIXELS, composite, image_size, premultiply, read_image, resize
from gen3d.errors import UserError

RNG_SEED = 7


def _pixels(shape, dtype=np.uint8, high=256):
    return np.random.default_rng(RNG_SEED).integers(0, high, size=shape).astype(dtype)


def _png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A PNG written by hand, for what Pillow cannot write (16-bit colour) or should not (huge headers)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


def test_rgb_png_is_exact(tmp_path):
    pixels = _pixels((5, 7, 3))
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == torch.float32 and image.shape == (5, 7, 3)
    assert torch.equal(image, torch.from_numpy(pixels).float() / 255)


def test_rgba_png_keeps_straight_alpha(tmp_path):
    pixels = _pixels((4, 6, 4))
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (4, 6, 4)
    assert torch.equal(image, torch.from_numpy(pixels).float() / 255)


@pytest.mark.parametrize("mode", ["L", "LA", "1"])
def test_greyscale_modes_become_equal_rgb_channels(tmp_path, mode):
    grey = _pixels((6, 5))
    source = Image.fromarray(grey, "L")
    if mode == "LA":
        source = Image.merge("LA", [source, Image.fromarray(_pixels((6, 5)), "L")])
    elif mode == "1":
        source = source.convert("1")
    source.save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (6, 5, 4 if mode == "LA" else 3)
    assert torch.equal(image[..., 0], image[..., 1]) and torch.equal(image[..., 0], image[..., 2])
    expected = np.asarray(source.convert("L"), dtype=np.float32) / 255
    assert torch.equal(image[..., 0], torch.from_numpy(expected))


def test_sixteen_bit_greyscale_keeps_its_precision(tmp_path):
    values = np.array([[0, 1000, 1001], [40000, 65535, 12345]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert image.shape == (2, 3, 3)
    assert torch.allclose(image[..., 0], torch.from_numpy(values.astype(np.float32) / 65535), atol=1e-7)
    assert image[0, 1, 0] != image[0, 2, 0]  # 1000 and 1001 differ below 8-bit resolution


def test_sixteen_bit_colour_png_loads_at_eight_bit_precision(tmp_path):
    values = _pixels((3, 4, 3), dtype=np.uint16, high=65536)
    rows = b"".join(b"\x00" + values[i].astype(">u2").tobytes() for i in range(3))
    (tmp_path / "c16.png").write_bytes(_png_bytes(4, 3, 16, 2, rows))
    image = read_image(tmp_path / "c16.png")
    assert image.shape == (3, 4, 3)
    assert torch.allclose(image, torch.from_numpy(values.astype(np.float32) / 65535), atol=1 / 255)


def test_palette_with_transparency_becomes_rgba(tmp_path):
    palette_image = Image.new("P", (4, 2))
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    palette_image.save(tmp_path / "p.png", transparency=1)
    image = read_image(tmp_path / "p.png")
    assert image.shape == (2, 4, 4)
    assert torch.equal(image[0, 0], torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert image[0, 1, 3] == 0.0
    palette_image.save(tmp_path / "opaque.png")
    assert torch.equal(read_image(tmp_path / "opaque.png")[0, 1], torch.tensor([0.0, 0.0, 1.0]))


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_modes(tmp_path, mode):
    Image.new(mode, (16, 8), (200, 100, 50) if mode == "RGB" else (120 if mode == "L" else (0, 128, 255, 0))).save(
        tmp_path / "a.jpg", quality=95
    )
    image = read_image(tmp_path / "a.jpg")
    assert image.shape == (8, 16, 3)
    expected = {"RGB": [200, 100, 50], "L": [120] * 3, "CMYK": [255, 127, 0]}[mode]
    assert torch.allclose(image.mean(dim=(0, 1)), torch.tensor(expected) / 255, atol=3 / 255)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(tmp_path, suffix):
    stored = np.zeros((4, 6, 3), dtype=np.uint8)
    stored[:2, :2] = 255  # a white block at the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / f"rotated{suffix}"
    Image.fromarray(stored).save(path, exif=exif, **({"quality": 100} if suffix == ".jpg" else {}))
    assert image_size(path) == (4, 6)
    image = read_image(path)
    assert image.shape == (6, 4, 3)
    assert image[0, -1].mean() > 0.9 and image[0, 0].mean() < 0.1 and image[-1, -1].mean() < 0.1


def _bad_file(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.png"
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "truncated":
        Image.fromarray(_pixels((64, 64, 3))).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "huge":  # the header claims 10000 x 6000 (60 MP); nothing that size is ever allocated
        path.write_bytes(_png_bytes(10_000, 6_000, 8, 0, b"\x00"))
    elif kind == "bomb":  # past Pillow's own decompression-bomb limit
        path.write_bytes(_png_bytes(20_000, 20_000, 8, 0, b"\x00"))
    return path


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("missing", "not found"),
        ("empty", "empty"),
        ("text", "not an image"),
        ("truncated", "cannot decode"),
        ("huge", "megapixel"),
        ("bomb", "too large"),
    ],
)
def test_bad_files_raise_user_error_naming_the_file(tmp_path, kind, reason):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(UserError, match=reason) as info:
        read_image(path)
    assert path.name in str(info.value) and "\n" not in str(info.value)
    if kind not in ("truncated",):  # the header alone is already refused
        with pytest.raises(UserError, match=path.name):
            image_size(path)


def test_size_limit_is_fifty_megapixels(tmp_path):
    assert MAX_PIXELS == 50_000_000
    below = tmp_path / "45mp.png"  # header only: the size is read without decoding 45 MP
    below.write_bytes(_png_bytes(7_500, 6_000, 8, 0, b"\x00"))
    assert image_size(below) == (7_500, 6_000)


def test_composite_premultiplied_rgba_over_background():
    straight = torch.tensor([[[1.0, 0.0, 0.0, 0.5], [0.2, 0.4, 0.6, 1.0], [0.3, 0.3, 0.3, 0.0]]])
    rgb, alpha = composite(premultiply(straight.clone()), (1.0, 1.0, 0.0))
    assert torch.allclose(rgb[0], torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.4, 0.6], [1.0, 1.0, 0.0]]))
    assert torch.equal(alpha[0, :, 0], torch.tensor([0.5, 1.0, 0.0]))
    opaque = torch.rand(2, 2, 3, generator=torch.Generator().manual_seed(RNG_SEED))
    same, none = composite(opaque, (0.0, 0.0, 0.0))
    assert same is opaque and none is None


def test_resize_area_averages_and_antialiases():
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
    image = checker.float()[..., None].repeat(1, 1, 3)
    assert torch.equal(resize(image, (4, 4)), torch.full((4, 4, 3), 0.5))  # nearest would give 0 or 1
    ramp = torch.arange(10.0)[None, :, None].repeat(6, 1, 1)
    shrunk = resize(ramp, (4, 3))  # non-integer factor 2.5 horizontally
    assert shrunk.shape == (3, 4, 1)
    assert torch.allclose(shrunk.mean(), ramp.mean(), atol=1e-5)
    assert torch.all(shrunk[0, 1:] > shrunk[0, :-1])
    assert resize(image, (8, 8)) is image
    assert resize(image, (16, 12)).shape == (12, 16, 3)
