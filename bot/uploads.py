"""Pictures users bring for image to image: checked, converted to PNG and kept on disk.

Upload links expire, so the picture is stored at once, content-addressed like results.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from data.images import ImageStore
from pipeline.errors import UserError
from pipeline.sizes import fit_size

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_SIDE = 4096
MIN_SIDE = 64
FORMATS = ("PNG", "JPEG", "WEBP")


@dataclass(frozen=True)
class InitImage:
    """A stored picture and the generation size that keeps its aspect within the pixel limit."""

    path: Path
    width: int
    height: int


def check_picture_size(size: int) -> None:
    """Refuse a picture by its size, before it is downloaded when the size is known first."""
    if size > MAX_UPLOAD_BYTES:
        raise UserError(
            f"the picture is {size / 2**20:.1f} MiB; the most is "
            f"{MAX_UPLOAD_BYTES // 2**20} MiB: send a smaller one"
        )


def store_init_image(data: bytes, folder: Path, max_pixels: int) -> InitImage:
    """Check and keep an uploaded picture under `folder` (blocking: call it in a thread)."""
    check_picture_size(len(data))
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
            image.load()
            picture = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise UserError(
            "that file is not a picture Dreamcord can read: send a PNG, JPEG or WebP"
        ) from None
    if kind not in FORMATS:
        raise UserError(f"{kind} pictures are not accepted: send a PNG, JPEG or WebP")
    if max(picture.size) > MAX_SIDE or min(picture.size) < MIN_SIDE:
        raise UserError(
            f"the picture is {picture.width}x{picture.height}; sides must be "
            f"{MIN_SIDE} to {MAX_SIDE} pixels"
        )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    store = ImageStore(folder)
    stored = store.put(buffer.getvalue())
    width, height = fit_size(picture.width, picture.height, max_pixels)
    return InitImage(store.path_of(stored.path), width, height)
