"""Pictures for image to image: checked, stored as PNG, sized within the pixel limit."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.uploads import store_init_image
from pipeline.errors import UserError
from pipeline.sizes import fit_size


def encoded(size: tuple[int, int], kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "teal").save(buffer, format=kind)
    return buffer.getvalue()


def test_a_jpeg_is_kept_as_png_and_sized_within_the_limit(tmp_path: Path) -> None:
    stored = store_init_image(encoded((1200, 800), "JPEG"), tmp_path, 512 * 512)
    assert stored.path.is_file() and stored.path.is_relative_to(tmp_path)
    assert Image.open(stored.path).format == "PNG"
    assert stored.width * stored.height <= 512 * 512
    assert stored.width % 8 == 0 and stored.height % 8 == 0
    assert abs(stored.width / stored.height - 1.5) < 0.05


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"GIF89a not really", "not a picture Dreamcord can read"),
        (encoded((64, 64), "GIF"), "GIF pictures are not accepted"),
        (encoded((32, 200), "PNG"), "sides must be 64 to 4096"),
        (b"\x89PNG" + b"0" * (21 * 2**20), "the most is 20 MiB"),
    ],
)
def test_bad_pictures_are_refused_with_the_reason(tmp_path: Path, data: bytes, says: str) -> None:
    with pytest.raises(UserError, match=says):
        store_init_image(data, tmp_path, 512 * 512)
    assert not any(tmp_path.rglob("*.png"))


@pytest.mark.parametrize(
    ("size", "limit"), [((512, 512), 512 * 512), ((3000, 1000), 512 * 512), ((100, 60), 10**6)]
)
def test_fit_size_keeps_within_the_limit_in_multiples_of_8(size, limit: int) -> None:
    width, height = fit_size(*size, limit)
    assert width * height <= limit
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width / height - size[0] / size[1]) < 0.15
