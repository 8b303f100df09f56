"""PNG files that carry their own A1111 parameters."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, PngImagePlugin

from pipeline.errors import UserError


def png_bytes(image: Image.Image, parameters: str) -> bytes:
    """Encode `image` as PNG with a `parameters` text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def read_png(path: Path) -> tuple[Image.Image, str | None]:
    """Load an image as RGB and its `parameters` text (None when it has none)."""
    image = open_image(path)
    return image.convert("RGB"), image.info.get("parameters")


def open_image(path: Path) -> Image.Image:
    """Load an image in its own mode (a mask's transparency matters), or a UserError."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist: check the path") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UserError(f"{path} is not a readable image ({error}): use a PNG or JPEG") from None
