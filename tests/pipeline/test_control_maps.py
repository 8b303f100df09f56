"""Control maps as A1111's ControlNet annotators make them, checked against OpenCV itself."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.control.preprocess import control_map, crop_and_resize
from pipeline.errors import UserError


def _picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """Blocks of flat colour with hard edges, so Canny has edges to find."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]
    return Image.fromarray(pixels, "RGB")


def test_canny_is_opencvs_canny_at_a1111s_thresholds_as_three_channels() -> None:
    picture = _picture(96, 64)
    edges = cv2.Canny(np.asarray(picture), 100, 200)
    made = np.asarray(control_map(picture, "canny", 96, 64))
    assert made.shape == (64, 96, 3)
    assert edges.any()
    for channel in range(3):
        assert np.array_equal(made[..., channel], edges)


def test_invert_turns_black_lines_on_white_into_white_on_black() -> None:
    picture = _picture(64, 64, seed=3)
    assert np.array_equal(
        np.asarray(control_map(picture, "invert", 64, 64)), 255 - np.asarray(picture)
    )


def test_none_keeps_a_ready_map_as_it_is() -> None:
    picture = _picture(64, 64, seed=4)
    assert np.array_equal(np.asarray(control_map(picture, "none", 64, 64)), np.asarray(picture))


def test_crop_and_resize_covers_the_size_and_crops_about_the_centre() -> None:
    """A 200x100 picture into 100x100 keeps its scale and loses 50 columns each side."""
    picture = _picture(200, 100, seed=5)
    fitted = crop_and_resize(picture, 100, 100)
    assert np.array_equal(np.asarray(fitted), np.asarray(picture.crop((50, 0, 150, 100))))


def test_an_unknown_preprocessor_names_the_choices() -> None:
    with pytest.raises(UserError, match=r"no preprocessor 'pose'.*none, canny, invert, depth"):
        control_map(_picture(64, 64), "pose", 64, 64)


@settings(max_examples=30, deadline=None)
@given(
    size=st.tuples(st.integers(1, 300), st.integers(1, 300)),
    target=st.tuples(st.integers(8, 256), st.integers(8, 256)),
    mode=st.sampled_from(["RGB", "RGBA", "L", "P", "I;16"]),
)
def test_any_picture_becomes_an_rgb_map_of_the_asked_size(
    size: tuple[int, int], target: tuple[int, int], mode: str
) -> None:
    picture = Image.new(mode, size)
    for preprocessor in ("none", "canny", "invert"):
        made = control_map(picture, preprocessor, *target)
        assert (made.size, made.mode) == (target, "RGB")
