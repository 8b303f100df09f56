"""Image sizes: `WxH` and `W:H` aspect ratios, mapped to what SD1.5 draws well."""

from __future__ import annotations

import math
import re

from pipeline.errors import UserError

SD15_PIXELS = 512 * 512
"""SD1.5 was trained at 512x512; sizes near this many pixels give the cleanest compositions."""

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")
_RATIO = re.compile(r"^\s*(\d{1,4}(?:\.\d+)?)\s*:\s*(\d{1,4}(?:\.\d+)?)\s*$")


def check_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """Return (width, height) when SD1.5 can draw it within `max_pixels`, else a UserError."""
    if width <= 0 or height <= 0:
        raise UserError(f"size {width}x{height} must be positive: try 512x512")
    if width % 8 or height % 8:
        hint = f"{round_to(width, 8)}x{round_to(height, 8)}"
        raise UserError(f"size {width}x{height}: both sides must be multiples of 8, try {hint}")
    if width * height > max_pixels:
        side = math.isqrt(max_pixels) // 8 * 8
        raise UserError(
            f"size {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}: use a smaller size (at most about {side}x{side}) or highres fix"
        )
    return width, height


def round_to(value: float, multiple: int) -> int:
    """`value` rounded to the nearest positive multiple of `multiple`."""
    return max(multiple, math.floor(value / multiple + 0.5) * multiple)


def size_for_ratio(ratio_w: float, ratio_h: float, pixels: int = SD15_PIXELS) -> tuple[int, int]:
    """The size of about `pixels` pixels with the aspect ratio w:h, sides multiples of 64."""
    if ratio_w <= 0 or ratio_h <= 0 or not math.isfinite(ratio_w / ratio_h):
        raise UserError(f"aspect ratio {ratio_w:g}:{ratio_h:g} must have two positive numbers")
    aspect = ratio_w / ratio_h
    if not 1 / 4 <= aspect <= 4:
        raise UserError(f"aspect ratio {ratio_w:g}:{ratio_h:g} is too extreme: stay within 4:1")
    width = math.sqrt(pixels * aspect)
    return round_to(width, 64), round_to(width / aspect, 64)


def parse_size(text: str, max_pixels: int) -> tuple[int, int]:
    """Read `512x768` (exact size) or `2:3` (aspect ratio) and check it against the limits."""
    if match := _SIZE.match(text):
        return check_size(int(match[1]), int(match[2]), max_pixels)
    if match := _RATIO.match(text):
        width, height = size_for_ratio(float(match[1]), float(match[2]))
        return check_size(width, height, max_pixels)
    raise UserError(f"size {text!r} is not WxH or W:H: write for example 512x768 or 2:3")


def fit_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """An image's own size shrunk to at most `max_pixels`, sides rounded down to multiples of 8."""
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    return max(8, math.floor(width * scale / 8) * 8), max(8, math.floor(height * scale / 8) * 8)
