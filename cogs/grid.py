"""Result pictures for Discord: the labelled grid, and encodings that fit the upload limit."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont


def compose_grid(
    images: Sequence[Image.Image], labels: bool = True, numbers: Sequence[int] | None = None
) -> Image.Image:
    """Tile images 2x2 for four (one row for two or three), each labelled in its corner.

    The labels are 1..n, or `numbers` when only some of a result's images are shown, so that
    each label still matches its U and V buttons.
    """
    if len(images) == 1:
        return images[0]
    columns = 2 if len(images) == 4 else len(images)
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height), "black")
    for index, image in enumerate(images):
        x, y = (index % columns) * width, (index // columns) * height
        grid.paste(image.convert("RGB"), (x, y))
        if labels:
            number = numbers[index] if numbers is not None else index + 1
            _label(grid, str(number), x, y, max(12, min(width, height) // 10))
    return grid


def _label(grid: Image.Image, text: str, x: int, y: int, size: int) -> None:
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=size)
    pad = size // 4
    box = draw.textbbox((x + pad * 2, y + pad), text, font=font)
    draw.rounded_rectangle(
        (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), radius=pad, fill=(0, 0, 0)
    )
    draw.text((x + pad * 2, y + pad), text, font=font, fill=(255, 255, 255))


@dataclass(frozen=True)
class Encoded:
    """An image ready to attach; `note` says what was given up to fit, if anything."""

    data: bytes
    filename: str
    note: str | None = None


JPEG_QUALITIES = range(95, 45, -5)
"""JPEG qualities tried in turn for a result over the upload limit: 95 looks the same as the
PNG to the eye; each step down costs detail only as far as it must."""


def encode_for_upload(image: Image.Image, limit: int, stem: str = "dreamcord") -> Encoded:
    """PNG when it fits under `limit` bytes, else the best JPEG quality that fits, else a
    smaller JPEG: a result is never dropped. The note says what was given up."""
    png = _encode(image, "PNG")
    if len(png) <= limit:
        return Encoded(png, f"{stem}.png")
    for quality in JPEG_QUALITIES:
        jpeg = _encode(image, "JPEG", quality=quality)
        if len(jpeg) <= limit:
            note = f"sent as JPEG (quality {quality}) to fit Discord's upload limit"
            return Encoded(jpeg, f"{stem}.jpg", note)
    scaled = image
    while max(scaled.size) > 64:
        scaled = scaled.resize(
            (scaled.width * 3 // 4, scaled.height * 3 // 4), Image.Resampling.LANCZOS
        )
        jpeg = _encode(scaled, "JPEG", quality=85)
        if len(jpeg) <= limit:
            note = f"scaled down to {scaled.width}x{scaled.height} to fit Discord's upload limit"
            return Encoded(jpeg, f"{stem}.jpg", note)
    raise ValueError(f"an image cannot fit in {limit} bytes")


def _encode(image: Image.Image, kind: str, **options: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=kind, **options)
    return buffer.getvalue()
