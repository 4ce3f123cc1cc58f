"""Image uploads for image-to-3D jobs: capped in size, decoded with Pillow before anything keeps them.

Uploads are stored content-addressed under RUNS_DIR/.gen3d-server/uploads/<sha256[:16]>/<name>.<ext>, so
submitting the same image twice stores it once and the run folder's name still reads like the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from gen3d.errors import UserError
from gen3d.io import slugify

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000  # the same ceiling as the scene image loaders
ACCEPTED_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp"}
UPLOADS_DIR = Path(".gen3d-server") / "uploads"


class UploadTooLarge(UserError):
    """The request body or the file is over the upload limit (HTTP 413)."""


@dataclass(frozen=True)
class Upload:
    """An uploaded file held in memory until the whole submission has been checked."""

    filename: str
    data: bytes = field(repr=False)


def check_image_bytes(data: bytes, where: str) -> str:
    """The file extension for `data` if it is a complete image of an accepted format; UserError otherwise."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadTooLarge(f"{where}: {len(data)} bytes is over the {MAX_UPLOAD_BYTES // 2**20} MiB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in ACCEPTED_FORMATS:
                    raise UserError(f"{where}: {image.format} images are not accepted; use PNG, JPEG, WebP or BMP")
                if image.width * image.height > MAX_PIXELS:
                    raise UserError(f"{where}: {image.width}x{image.height} is over {MAX_PIXELS // 10**6} megapixels")
                image.load()  # decodes every pixel: truncated or corrupt files fail here
                return ACCEPTED_FORMATS[image.format]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise UserError(f"{where}: not a readable image ({type(exc).__name__})") from None


def check_image_file(path: Path, where: str) -> None:
    if not path.is_file():
        raise UserError(f"{where}: {path} is not a file on the server")
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        raise UploadTooLarge(f"{where}: {path} is over the {MAX_UPLOAD_BYTES // 2**20} MiB limit")
    check_image_bytes(path.read_bytes(), where)


def save_upload(runs_dir: Path, upload: Upload) -> Path:
    """Store a checked image (see `check_image_bytes`); returns its path on the server."""
    with Image.open(io.BytesIO(upload.data)) as image:  # reads the header only
        suffix = ACCEPTED_FORMATS[image.format]
    folder = runs_dir / UPLOADS_DIR / hashlib.sha256(upload.data).hexdigest()[:16]
    path = folder / (slugify(Path(upload.filename or "image").stem) + suffix)
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(upload.data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
