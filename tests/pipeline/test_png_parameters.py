"""Parameters read back from pictures as A1111 and other tools write them.

A1111 keeps the infotext of a JPEG or WebP in the Exif IFD's UserComment, written by piexif's
`UserComment.dump(text, encoding="unicode")`: the 8-byte header `UNICODE\\0` (CIPA DC-008,
table 9) and the text in UTF-16 big-endian. Other tools write little-endian or the ASCII
header. The fixtures below write those bytes by hand from the standard, through Pillow.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.png import parameters_of, png_bytes, read_png

INFOTEXT = (
    "a fox in the snow, (detailed fur:1.2), 雪\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 11, Size: 512x768"
)
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286


def with_user_comment(path: Path, kind: str, comment: bytes) -> Path:
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = comment
    Image.new("RGB", (16, 16), "teal").save(path, format=kind, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("kind", ["JPEG", "WEBP"])
@pytest.mark.parametrize(
    "comment",
    [
        b"UNICODE\0" + INFOTEXT.encode("utf-16-be"),  # A1111 through piexif
        b"UNICODE\0" + INFOTEXT.encode("utf-16-le"),  # tools that follow the machine's order
        b"ASCII\0\0\0" + INFOTEXT.encode("utf-8"),
    ],
    ids=["unicode-be", "unicode-le", "ascii-header"],
)
def test_a_jpeg_or_webp_gives_back_its_infotext(tmp_path: Path, kind: str, comment: bytes) -> None:
    path = with_user_comment(tmp_path / f"civitai.{kind.lower()}", kind, comment)
    image, text = read_png(path)
    assert text == INFOTEXT
    assert image.size == (16, 16)


def test_a_png_keeps_its_text_chunk_first(tmp_path: Path) -> None:
    path = tmp_path / "a1111.png"
    path.write_bytes(png_bytes(Image.new("RGB", (8, 8)), INFOTEXT))
    assert read_png(path)[1] == INFOTEXT


@pytest.mark.parametrize(
    "comment",
    [b"", b"UNICODE\0", b"JIS\0\0\0\0\0" + "雪".encode("shift_jis")],
    ids=["empty", "header-only", "jis"],
)
def test_no_or_unread_comment_is_no_parameters(tmp_path: Path, comment: bytes) -> None:
    path = with_user_comment(tmp_path / "photo.jpg", "JPEG", comment)
    assert read_png(path)[1] is None


def test_a_photo_without_exif_has_no_parameters(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(path, format="JPEG")
    assert read_png(path)[1] is None


@settings(max_examples=60, deadline=None)
@given(text=st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"])))
def test_any_prompt_round_trips_as_a1111_writes_it(text: str) -> None:
    """Big-endian, for any text after the first letter (a prompt starts with one)."""
    prompt = "a " + text
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\0" + prompt.encode("utf-16-be")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=exif.tobytes())
    with Image.open(buffer) as image:
        assert parameters_of(image) == prompt
