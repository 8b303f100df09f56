"""Control maps from pictures: what a ControlNet unit reads, made when the request is built.

The map is made once at the request's size and stored, so Reroll, Variations and Upscale reuse
it and the grid's Info can show it. A picture is fitted as A1111's default "Crop and Resize"
does: scaled to cover the size, then cropped to it about the centre.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.errors import UserError
from pipeline.request import CONTROL_PREPROCESSORS

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.control.annotators import Annotators

CANNY_LOW = 100
CANNY_HIGH = 200
"""A1111's ControlNet canny thresholds (its "Threshold A" and "Threshold B")."""


def crop_and_resize(picture: Image.Image, width: int, height: int) -> Image.Image:
    """`picture` scaled to cover `width`x`height` (Lanczos), cropped to it about the centre."""
    from PIL import Image

    scale = max(width / picture.width, height / picture.height)
    cover = (max(width, round(picture.width * scale)), max(height, round(picture.height * scale)))
    resized = picture.convert("RGB").resize(cover, Image.Resampling.LANCZOS)
    left, top = (cover[0] - width) // 2, (cover[1] - height) // 2
    return resized.crop((left, top, left + width, top + height))


def control_map(
    picture: Image.Image,
    preprocessor: str,
    width: int,
    height: int,
    annotators: Annotators | None = None,
) -> Image.Image:
    """The RGB map a unit reads, from the user's `picture` by `preprocessor`, at the size;
    `depth` runs the model of `annotators` (torch is imported only then)."""
    import numpy as np
    from PIL import Image

    if preprocessor not in CONTROL_PREPROCESSORS:
        choices = ", ".join(CONTROL_PREPROCESSORS)
        raise UserError(f"there is no preprocessor {preprocessor!r}: choose one of {choices}")
    fitted = crop_and_resize(picture, width, height)
    if preprocessor == "none":
        return fitted
    pixels = np.asarray(fitted)
    if preprocessor == "invert":
        return Image.fromarray(255 - pixels, "RGB")
    if preprocessor == "depth":
        if annotators is None:
            raise UserError("the depth preprocessor has no annotators folder here: use none")
        return annotators.depth(fitted)
    import cv2

    edges = cv2.Canny(pixels, CANNY_LOW, CANNY_HIGH)
    return Image.fromarray(np.stack([edges] * 3, axis=-1), "RGB")
