"""Edit geometry: the canvas and mask of an outpaint, a zoom out, a pan or a region repaint.

Torch-free (PIL only), so the bot builds and checks an edit before anything is queued. A mask
is mode "L" at the canvas's size: 255 repaints, 0 keeps the pixel. The engine paints a canvas
through its mask (pipeline/inpaint.py); these functions only decide what it is asked to paint.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from PIL import Image, ImageChops

from pipeline.errors import UserError
from pipeline.sizes import SD15_PIXELS

LATENT_MULTIPLE = 8
"""Canvas sides are multiples of this, as the VAE's latents need."""

MIN_ZOOM = 1.0
MAX_ZOOM = 2.0
"""Zoom out by more than 1.0 (nothing to add otherwise) and at most 2.0, as Midjourney."""

PAN_DIRECTIONS = ("left", "right", "up", "down")

REGIONS = (
    "top-left",
    "top",
    "top-right",
    "left",
    "centre",
    "right",
    "bottom-left",
    "bottom",
    "bottom-right",
    "top-half",
    "bottom-half",
    "left-half",
    "right-half",
    "border",
)
"""Named parts of a picture for a region repaint: the 3x3 cells (row by row), the halves, and
the border (every cell but the centre)."""

_CELLS = REGIONS[:9]

REPAINT = 255
KEEP = 0
MASK_THRESHOLD = 128
"""A mask pixel at least this bright (after compositing over black) repaints."""


@dataclass(frozen=True)
class Canvas:
    """A picture to paint and its mask (mode "L", same size, 255 = repaint)."""

    image: Image.Image
    mask: Image.Image

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def outpaint(image: Image.Image, left: int, right: int, top: int, bottom: int) -> Canvas:
    """`image` on a canvas grown by the given pixels on each side, the new area masked.

    Each amount is rounded up to a multiple of 8 (and a little more on a side that grows,
    where the picture's own side is not a multiple of 8). The original pixels sit unchanged in the
    canvas; the new area holds its nearest edge pixel stretched outwards, so that the "original"
    fill starts from the picture's own colours rather than from black.
    """
    amounts = {"left": left, "right": right, "top": top, "bottom": bottom}
    for side, amount in amounts.items():
        if amount < 0:
            raise UserError(f"outpaint {side} {amount} is negative: use 0 or more pixels")
    if not any(amounts.values()):
        raise UserError("outpaint needs at least one side to grow: for example 64,0,0,0")
    left, right = _grown(image.width, left, right)
    top, bottom = _grown(image.height, top, bottom)
    return _placed(image, image.width + left + right, image.height + top + bottom, left, top)


def _grown(side: int, near: int, far: int) -> tuple[int, int]:
    """The two growths of one axis rounded up to multiples of 8; when the picture's side is not
    one, the growing end takes the rest too, so the canvas side is a multiple of 8."""
    near, far = _round_up(near), _round_up(far)
    rest = -(side + near + far) % LATENT_MULTIPLE
    if far:
        return near, far + rest
    if near:
        return near + rest, far
    return near, far


def zoom_out(image: Image.Image, factor: float) -> Canvas:
    """The picture shrunk by `factor` into the middle of a canvas of its own size.

    This is the canvas `factor` times the picture (sides rounded to 8) with the picture in its
    centre, scaled back by `fit_for_model` to the picture's own pixel count, so the size that
    comes out is the input's size (sides rounded to multiples of 8) and the input fills the
    middle 1/`factor` of each side (Lanczos-shrunk, so the new border is what gets painted).
    """
    check_zoom(factor)
    canvas_width = _round_up(image.width * factor)
    canvas_height = _round_up(image.height * factor)
    width, height = fit_for_model(canvas_width, canvas_height, image.width * image.height)
    scale = width / canvas_width
    shrunk_width = max(1, round(image.width * scale))
    shrunk_height = max(1, round(image.height * scale))
    shrunk = image.resize((shrunk_width, shrunk_height), Image.Resampling.LANCZOS)
    return _placed(
        shrunk, width, height, (width - shrunk_width) // 2, (height - shrunk_height) // 2
    )


def pan(image: Image.Image, direction: str) -> Canvas:
    """The canvas grown on one side by half the picture's size along that side."""
    half_width, half_height = image.width // 2, image.height // 2
    grow = {
        "left": (half_width, 0, 0, 0),
        "right": (0, half_width, 0, 0),
        "up": (0, 0, half_height, 0),
        "down": (0, 0, 0, half_height),
    }
    if direction not in grow:
        raise UserError(f"unknown pan direction {direction!r}: use {', '.join(PAN_DIRECTIONS)}")
    return outpaint(image, *grow[direction])


def make_square(image: Image.Image) -> Canvas:
    """The canvas grown on the short side, both ends equally, to the long side's length."""
    missing = abs(image.width - image.height)
    if missing == 0:
        raise UserError("the picture is already square: Make Square has nothing to add")
    first, second = missing // 2, missing - missing // 2
    if image.width < image.height:
        return outpaint(image, first, second, 0, 0)
    return outpaint(image, 0, 0, first, second)


def fit_for_model(width: int, height: int, max_pixels: int = SD15_PIXELS) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, to at most `max_pixels`; sides multiples of 8.

    A size already within the limit only has its sides rounded down to multiples of 8.
    """
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    return _round_down(width * scale), _round_down(height * scale)


def region_mask(width: int, height: int, regions: Iterable[str]) -> Image.Image:
    """The mask (mode "L") that repaints the union of the named REGIONS of a picture.

    The 3x3 cells split each side at thirds (rounded to whole pixels); the halves at the middle.
    """
    names = [region.strip().lower() for region in regions]
    if not names:
        raise UserError(f"choose at least one region to repaint: {', '.join(REGIONS)}")
    mask = Image.new("L", (width, height), KEEP)
    for name in names:
        for box in _region_boxes(name, width, height):
            mask.paste(REPAINT, box)
    return mask


def check_canvas(width: int, height: int, max_pixels: int, operation: str = "this edit") -> None:
    """Refuse a canvas over the server's pixel limit, saying the limit and how to stay in it."""
    if width * height > max_pixels:
        raise UserError(
            f"{operation} would make {width}x{height} ({width * height:,} pixels); this server "
            f"allows {max_pixels:,}: zoom less, extend less, or start from a smaller image"
        )


def check_zoom(factor: float) -> float:
    """The zoom-out factor, or a UserError when it is not more than 1.0 and at most 2.0."""
    if not (math.isfinite(factor) and MIN_ZOOM < factor <= MAX_ZOOM):
        raise UserError(
            f"zoom factor {factor:g} is out of range: use more than {MIN_ZOOM:g}, "
            f"up to {MAX_ZOOM:g} (for example 1.5 or 2)"
        )
    return factor


def prepare_mask(mask: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, tuple[str, ...]]:
    """A user's mask as a binary "L" mask of `size`, with notes to show the user.

    Transparent parts count as black (a mask painted on a transparent layer works); a mask of
    another size is resized to fit, with a note; an empty mask is refused; a mask that covers
    everything is kept, with a note that it repaints the whole picture.
    """
    notes = []
    if mask.size != size:
        notes.append(
            f"the mask is {mask.width}x{mask.height} but the picture is {size[0]}x{size[1]}: "
            "it was stretched to fit"
        )
        mask = mask.resize(size, Image.Resampling.LANCZOS)
    binary = _grey(mask).point(lambda value: REPAINT if value >= MASK_THRESHOLD else KEEP)
    low, high = binary.getextrema()
    if high == KEEP:
        raise UserError("the mask is empty: paint the part to repaint white")
    if low == REPAINT:
        notes.append(mask_covers_all_note())
    return binary, tuple(notes)


def mask_covers_all_note() -> str:
    return (
        "the mask covers the whole picture: nothing of it is kept, so this is a new picture "
        "at that size"
    )


def _grey(mask: Image.Image) -> Image.Image:
    """The mask's brightness, with transparency composited over black."""
    if mask.mode in ("RGBA", "LA", "PA") or "transparency" in mask.info:
        rgba = mask.convert("RGBA")
        return ImageChops.multiply(rgba.convert("L"), rgba.getchannel("A"))
    return mask.convert("L")


def _region_boxes(name: str, width: int, height: int) -> list[tuple[int, int, int, int]]:
    columns = [round(width * i / 3) for i in range(4)]
    rows = [round(height * i / 3) for i in range(4)]
    if name in _CELLS:
        row, column = divmod(_CELLS.index(name), 3)
        return [(columns[column], rows[row], columns[column + 1], rows[row + 1])]
    halves = {
        "top-half": (0, 0, width, height // 2),
        "bottom-half": (0, height // 2, width, height),
        "left-half": (0, 0, width // 2, height),
        "right-half": (width // 2, 0, width, height),
    }
    if name in halves:
        return [halves[name]]
    if name == "border":
        return [
            box for cell in _CELLS if cell != "centre" for box in _region_boxes(cell, width, height)
        ]
    raise UserError(f"unknown region {name!r}: use {', '.join(REGIONS)}")


def _placed(image: Image.Image, width: int, height: int, left: int, top: int) -> Canvas:
    """`image` at (left, top) of a width x height canvas, masked everywhere but there."""
    rgb = image.convert("RGB")
    mask = Image.new("L", (width, height), REPAINT)
    mask.paste(KEEP, (left, top, left + rgb.width, top + rgb.height))
    return Canvas(_stretched(rgb, width, height, left, top), mask)


def _stretched(image: Image.Image, width: int, height: int, left: int, top: int) -> Image.Image:
    """`image` at (left, top), each pixel of its edge repeated outwards to the canvas's edge."""
    canvas = Image.new("RGB", (width, height))
    canvas.paste(image, (left, top))
    right, bottom = left + image.width, top + image.height
    strips = [
        ((left, top, left + 1, bottom), (0, top, left, bottom)),
        ((right - 1, top, right, bottom), (right, top, width, bottom)),
    ]
    for source, target in strips:
        _stretch(canvas, source, target)
    # The rows go after the columns, so the corners take the corner pixels.
    for source, target in (
        ((0, top, width, top + 1), (0, 0, width, top)),
        ((0, bottom - 1, width, bottom), (0, bottom, width, height)),
    ):
        _stretch(canvas, source, target)
    return canvas


def _stretch(
    canvas: Image.Image, source: tuple[int, int, int, int], target: tuple[int, int, int, int]
) -> None:
    """Repeat the one-pixel strip `source` of `canvas` over the box `target`."""
    size = (target[2] - target[0], target[3] - target[1])
    if size[0] > 0 and size[1] > 0:
        strip = canvas.crop(source).resize(size, Image.Resampling.NEAREST)
        canvas.paste(strip, target[:2])


def _round_up(value: float) -> int:
    return math.ceil(value / LATENT_MULTIPLE) * LATENT_MULTIPLE


def _round_down(value: float) -> int:
    return max(LATENT_MULTIPLE, math.floor(value / LATENT_MULTIPLE) * LATENT_MULTIPLE)
