"""Any bytes sent as a picture for image to image: a stored PNG within the limits, or a UserError.

Pillow opens some 40 formats; only PNG, JPEG and WebP are accepted, and a declared size past the
limits is refused before a pixel is decoded, so no input can make the bot allocate much.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, UnidentifiedImageError

from bot.uploads import FORMATS, MAX_SIDE, MIN_SIDE, InitImage, store_init_image
from pipeline.errors import UserError
from tests.bot.picture_files import HEADERS

MAX_PIXELS = 512 * 512
FUZZ = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def stored_or_refused(data: bytes, folder: Path) -> InitImage | UserError:
    try:
        stored = store_init_image(data, folder, MAX_PIXELS)
    except UserError as refusal:
        assert str(refusal)
        return refusal
    with Image.open(stored.path) as kept:
        assert kept.format == "PNG"
        assert min(kept.size) >= MIN_SIDE and max(kept.size) <= MAX_SIDE
    assert stored.width * stored.height <= MAX_PIXELS
    return stored


def _written(kind: str) -> bytes | None:
    """A 96x80 RGB picture in `kind`, or None where Pillow cannot write that mode or size."""
    buffer = io.BytesIO()
    try:
        Image.new("RGB", (96, 80), "teal").save(buffer, format=kind)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return buffer.getvalue()


def _writable_formats() -> list[str]:
    Image.init()
    return [kind for kind in sorted(Image.SAVE) if _written(kind) is not None]


@FUZZ
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_are_stored_or_refused(tmp_path: Path, data: bytes) -> None:
    stored_or_refused(data, tmp_path)


@FUZZ
@given(
    kind=st.sampled_from(sorted(HEADERS)),
    width=st.integers(0, 2**16 - 1) | st.sampled_from([MAX_SIDE, MAX_SIDE + 1, 2**31 - 1]),
    height=st.integers(0, 2**16 - 1),
)
def test_crafted_headers_of_any_declared_size_are_refused(
    tmp_path: Path, kind: str, width: int, height: int
) -> None:
    """Headers only, no pixels: nothing here is a whole picture, so all must be refused."""
    try:
        data = HEADERS[kind](width, height)
    except Exception:
        return
    assert isinstance(stored_or_refused(data, tmp_path), UserError)


@FUZZ
@given(
    kind=st.sampled_from(["png", "gif", "bmp", "tiff", "ico", "psd"]),
    at=st.integers(0, 10**6),
    value=st.integers(0, 255),
)
def test_a_damaged_byte_in_a_crafted_header_is_refused(
    tmp_path: Path, kind: str, at: int, value: int
) -> None:
    data = bytearray(HEADERS[kind](MAX_SIDE * 4, MAX_SIDE * 4 if kind != "ico" else 256))
    data[at % len(data)] = value
    assert isinstance(stored_or_refused(bytes(data), tmp_path), UserError)


@pytest.mark.parametrize("kind", _writable_formats())
def test_every_format_pillow_writes_is_stored_or_refused_by_name(tmp_path: Path, kind: str) -> None:
    written = _written(kind)
    assert written is not None
    outcome = stored_or_refused(written, tmp_path)
    try:  # a one-picture MPO is a JPEG file, read as one; PDF and others are write-only
        with Image.open(io.BytesIO(written)) as written:
            accepted = written.format in FORMATS
    except UnidentifiedImageError:
        accepted = False
    if accepted:
        assert isinstance(outcome, InitImage)
    else:
        assert isinstance(outcome, UserError)
