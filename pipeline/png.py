"""Pictures that carry their own A1111 parameters: PNG text chunks, and JPEG and WebP EXIF."""

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


EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
"""Where A1111 writes the parameters of a JPEG or WebP: the Exif IFD's UserComment."""

UNICODE_PREFIX = b"UNICODE\0"
TEXT_PREFIXES = (b"ASCII\0\0\0", b"\0" * 8)
"""EXIF's character-code headers (CIPA DC-008, table 9) that Dreamcord reads; JIS is not."""


def read_png(path: Path) -> tuple[Image.Image, str | None]:
    """Load an image as RGB and its `parameters` text (None when it has none)."""
    image = open_image(path)
    return image.convert("RGB"), parameters_of(image)


def parameters_of(image: Image.Image) -> str | None:
    """The PNG `parameters` text, else the EXIF UserComment A1111 writes into JPEG and WebP."""
    text = image.info.get("parameters")
    if isinstance(text, str):
        return text
    comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    return user_comment_text(comment) if isinstance(comment, bytes) else None


def user_comment_text(comment: bytes) -> str | None:
    """An EXIF UserComment as text, None when empty or in a code Dreamcord does not read.

    The standard's UNICODE is UTF-16 in the file's byte order; A1111 (through piexif) writes
    big-endian whatever the file says, and some tools write little-endian, so the order is
    read from the text itself: ASCII characters have their zero byte first in big-endian.
    """
    prefix, body = comment[:8], comment[8:]
    if prefix == UNICODE_PREFIX:
        big_endian = body[:1] == b"\0" or body[1:2] != b"\0"
        text = body.decode("utf-16-be" if big_endian else "utf-16-le", errors="replace")
    elif prefix in TEXT_PREFIXES:
        text = body.decode("utf-8", errors="replace")
    else:
        return None
    return text.rstrip("\0") or None


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
