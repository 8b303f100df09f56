"""The result grid and the upload encodings."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cogs.grid import compose_grid, encode_for_upload


def noise(size: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def test_four_images_make_a_labelled_two_by_two_grid() -> None:
    images = [Image.new("RGB", (64, 64), color) for color in ("red", "green", "blue", "white")]
    grid = compose_grid(images)
    assert grid.size == (128, 128)
    assert grid.getpixel((60, 60)) == (255, 0, 0)
    assert grid.getpixel((127, 127)) == (255, 255, 255)
    assert grid.getpixel((64 + 60, 60)) == (0, 128, 0)
    unlabelled = compose_grid(images, labels=False)
    assert unlabelled.getpixel((8, 8)) == (255, 0, 0)
    assert grid.getpixel((8, 8)) != (255, 0, 0)


def test_two_images_sit_in_one_row_and_one_image_is_itself() -> None:
    images = [noise(32, 1), noise(32, 2)]
    assert compose_grid(images).size == (64, 32)
    assert compose_grid(images[:1]) is images[0]


def test_small_images_stay_png() -> None:
    encoded = encode_for_upload(noise(32, 0), limit=1 << 20)
    assert encoded.filename.endswith(".png") and encoded.note is None
    assert Image.open(io.BytesIO(encoded.data)).format == "PNG"


@pytest.mark.parametrize("limit", [200_000, 20_000])
def test_large_images_shrink_under_the_limit_and_say_so(limit: int) -> None:
    encoded = encode_for_upload(noise(512, 3), limit=limit)
    assert len(encoded.data) <= limit
    assert encoded.filename.endswith(".jpg")
    assert "upload limit" in (encoded.note or "")


def test_over_the_limit_the_best_jpeg_quality_that_fits_is_sent() -> None:
    image = noise(256, 4)
    sizes = {}
    for quality in (95, 80):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        sizes[quality] = len(buffer.getvalue())
    assert encode_for_upload(image, limit=sizes[95]).note == (
        "sent as JPEG (quality 95) to fit Discord's upload limit"
    )
    chosen = encode_for_upload(image, limit=sizes[80])
    assert chosen.note is not None and "quality 80" in chosen.note
    assert Image.open(io.BytesIO(chosen.data)).size == (256, 256), "not scaled down"
