"""Edit geometry. Expected pixels come from numpy slicing and np.pad of the input, not from the
canvas code; expected sizes are worked out by hand from the rules the docs state."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.canvas import (
    REGIONS,
    check_canvas,
    check_zoom,
    fit_for_model,
    make_square,
    outpaint,
    pan,
    prepare_mask,
    region_mask,
    zoom_out,
)
from pipeline.errors import UserError


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_outpaint_left_puts_the_input_in_the_right_columns() -> None:
    source = picture(64, 64)
    canvas = outpaint(source, 64, 0, 0, 0)
    assert canvas.size == (128, 64)
    assert np.array_equal(pixels(canvas.image)[:, 64:], pixels(source))
    mask = pixels(canvas.mask)
    assert canvas.mask.mode == "L"
    assert (mask[:, :64] == 255).all() and (mask[:, 64:] == 0).all()


def test_outpaint_rounds_each_side_up_to_a_multiple_of_8() -> None:
    canvas = outpaint(picture(64, 64), 1, 9, 0, 17)
    assert canvas.size == (64 + 8 + 16, 64 + 24)
    assert np.array_equal(pixels(canvas.image)[:64, 8:72], pixels(picture(64, 64)))


def test_outpaint_fills_the_new_area_with_the_stretched_edge() -> None:
    source = picture(16, 24, seed=3)
    canvas = outpaint(source, 8, 16, 24, 8)
    expected = np.pad(pixels(source), ((24, 8), (8, 16), (0, 0)), mode="edge")
    assert np.array_equal(pixels(canvas.image), expected)


def test_outpaint_of_a_side_not_a_multiple_of_8_still_makes_a_canvas_of_multiples() -> None:
    canvas = outpaint(picture(60, 64), 0, 8, 0, 0)
    assert canvas.size == (72, 64)
    assert np.array_equal(pixels(canvas.image)[:, :60], pixels(picture(60, 64)))


@pytest.mark.parametrize(
    ("sides", "message"),
    [((0, 0, 0, 0), "at least one side"), ((-8, 0, 0, 0), "negative")],
)
def test_outpaint_refuses_nothing_to_add_and_negative_sides(sides: tuple, message: str) -> None:
    with pytest.raises(UserError, match=message):
        outpaint(picture(64, 64), *sides)


def test_zoom_out_2_keeps_the_size_and_shrinks_the_input_by_half_into_the_centre() -> None:
    source = picture(64, 64)
    canvas = zoom_out(source, 2.0)
    assert canvas.size == (64, 64)
    half = pixels(source.resize((32, 32), Image.Resampling.LANCZOS))
    assert np.array_equal(pixels(canvas.image)[16:48, 16:48], half)
    mask = pixels(canvas.mask)
    assert (mask[16:48, 16:48] == 0).all()
    assert mask.sum() == 255 * (64 * 64 - 32 * 32)


def test_zoom_out_1_5_of_a_512_picture_comes_out_512_with_the_input_at_two_thirds() -> None:
    # canvas 768x768, scaled back to 512x512 pixels: the input becomes 341x341 (512 / 1.5).
    canvas = zoom_out(picture(512, 512), 1.5)
    assert canvas.size == (512, 512)
    assert int((pixels(canvas.mask) == 0).sum()) == 341 * 341


@pytest.mark.parametrize("factor", [1.0, 0.5, 2.01, float("nan"), float("inf")])
def test_zoom_factor_out_of_range_is_refused(factor: float) -> None:
    with pytest.raises(UserError, match=r"zoom factor .* out of range: use more than 1, up to 2"):
        zoom_out(picture(64, 64), factor)
    with pytest.raises(UserError):
        check_zoom(factor)


@pytest.mark.parametrize(
    ("direction", "size", "box"),
    [
        ("left", (96, 48), (32, 0)),
        ("right", (96, 48), (0, 0)),
        ("up", (64, 72), (0, 24)),
        ("down", (64, 72), (0, 0)),
    ],
)
def test_pan_extends_one_side_by_half_the_picture(
    direction: str, size: tuple[int, int], box: tuple[int, int]
) -> None:
    source = picture(64, 48)
    canvas = pan(source, direction)
    assert canvas.size == size
    left, top = box
    assert np.array_equal(pixels(canvas.image)[top : top + 48, left : left + 64], pixels(source))


def test_pan_in_an_unknown_direction_is_refused() -> None:
    with pytest.raises(UserError, match="unknown pan direction 'sideways': use left, right"):
        pan(picture(64, 64), "sideways")


def test_make_square_grows_the_short_side_at_both_ends() -> None:
    source = picture(64, 32)
    canvas = make_square(source)
    assert canvas.size == (64, 64)
    assert np.array_equal(pixels(canvas.image)[16:48], pixels(source))
    assert (pixels(canvas.mask)[:16] == 255).all() and (pixels(canvas.mask)[48:] == 255).all()


def test_make_square_of_a_square_picture_is_refused() -> None:
    with pytest.raises(UserError, match="already square"):
        make_square(picture(64, 64))


def test_fit_for_model_scales_down_to_the_limit_with_sides_of_8() -> None:
    assert fit_for_model(1024, 1024, 512 * 512) == (512, 512)
    # scale sqrt(1/3): 1536 -> 886.8 and 512 -> 295.6, each rounded down to a multiple of 8
    assert fit_for_model(1536, 512, 512 * 512) == (880, 288)
    assert fit_for_model(100, 60, 512 * 512) == (96, 56)


def test_check_canvas_names_the_size_and_the_limit() -> None:
    check_canvas(768, 768, 768 * 768)
    with pytest.raises(UserError) as raised:
        check_canvas(1536, 512, 589_824, "panning")
    assert str(raised.value).startswith(
        "panning would make 1536x512 (786,432 pixels); this server allows 589,824:"
    )


def test_region_mask_cells_cover_the_thirds() -> None:
    mask = pixels(region_mask(90, 60, ["top-left", "centre"]))
    expected = np.zeros((60, 90), np.uint8)
    expected[0:20, 0:30] = 255
    expected[20:40, 30:60] = 255
    assert np.array_equal(mask, expected)


def test_region_mask_halves_and_border() -> None:
    assert np.array_equal(pixels(region_mask(8, 6, ["right-half"]))[:, 4:], np.full((6, 4), 255))
    assert pixels(region_mask(8, 6, ["right-half"]))[:, :4].max() == 0
    border = pixels(region_mask(90, 60, ["border"]))
    assert border[20:40, 30:60].max() == 0
    assert int((border == 255).sum()) == 90 * 60 - 30 * 20


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(3, 200),
    height=st.integers(3, 200),
    chosen=st.lists(st.sampled_from(REGIONS), min_size=1, max_size=5),
)
def test_several_regions_repaint_their_union(width: int, height: int, chosen: list[str]) -> None:
    union = np.zeros((height, width), bool)
    for name in chosen:
        union |= pixels(region_mask(width, height, [name])) == 255
    assert np.array_equal(pixels(region_mask(width, height, chosen)) == 255, union)


def test_an_unknown_region_or_none_is_refused() -> None:
    with pytest.raises(UserError, match="unknown region 'middle': use top-left"):
        region_mask(64, 64, ["middle"])
    with pytest.raises(UserError, match="choose at least one region"):
        region_mask(64, 64, [])


def test_an_empty_mask_is_refused() -> None:
    with pytest.raises(UserError, match="the mask is empty: paint the part to repaint white"):
        prepare_mask(Image.new("L", (64, 64), 0), (64, 64))


def test_a_mask_covering_everything_is_kept_with_a_note() -> None:
    mask, notes = prepare_mask(Image.new("RGB", (64, 64), "white"), (64, 64))
    assert pixels(mask).min() == 255
    assert len(notes) == 1 and "whole picture" in notes[0]


def test_a_mask_of_another_size_is_resized_with_a_note() -> None:
    small = Image.new("L", (32, 32), 0)
    small.paste(255, (0, 0, 16, 32))
    mask, notes = prepare_mask(small, (64, 64))
    assert mask.size == (64, 64)
    assert pixels(mask)[:, :30].min() == 255 and pixels(mask)[:, 34:].max() == 0
    assert notes == ("the mask is 32x32 but the picture is 64x64: it was stretched to fit",)


def test_a_mask_painted_on_a_transparent_layer_repaints_only_the_paint() -> None:
    layer = Image.new("RGBA", (16, 16), (255, 255, 255, 0))
    layer.paste((255, 255, 255, 255), (0, 0, 8, 16))
    mask, _ = prepare_mask(layer, (16, 16))
    expected = np.zeros((16, 16), np.uint8)
    expected[:, :8] = 255
    assert np.array_equal(pixels(mask), expected)


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(8, 96),
    height=st.integers(8, 96),
    sides=st.tuples(*[st.integers(0, 40)] * 4).filter(any),
)
def test_outpaint_keeps_every_input_pixel_and_grows_by_sides_rounded_up(
    width: int, height: int, sides: tuple[int, int, int, int]
) -> None:
    source = picture(width, height, seed=width * height)
    canvas = outpaint(source, *sides)
    left, right, top, bottom = (-(-side // 8) * 8 for side in sides)
    assert canvas.size[0] - width - left - right in range(8)
    assert canvas.size[1] - height - top - bottom in range(8)
    for grown, side in ((left or right, canvas.size[0]), (top or bottom, canvas.size[1])):
        assert side % 8 == 0 or not grown
    # Where a side of the picture is not a multiple of 8, the growing end takes the rest.
    ys, xs = np.nonzero(pixels(canvas.mask) == 0)
    x0, y0 = int(xs.min()), int(ys.min())
    assert x0 - left in range(8) and y0 - top in range(8)
    assert (xs.max() - x0 + 1, ys.max() - y0 + 1, len(xs)) == (width, height, width * height)
    assert np.array_equal(pixels(canvas.image)[y0 : y0 + height, x0 : x0 + width], pixels(source))


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(16, 120),
    height=st.integers(16, 120),
    box=st.tuples(st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.05, 1), st.floats(0.05, 1)),
    padding=st.integers(0, 40),
    aspect=st.sampled_from([(512, 512), (768, 512), (512, 768)]),
)
def test_the_only_masked_crop_holds_the_mask_and_its_padding_inside_the_picture(
    width: int, height: int, box: tuple[float, ...], padding: int, aspect: tuple[int, int]
) -> None:
    from pipeline.inpaint import crop_box

    x, y, w, h = box
    left, top = int(x * width), int(y * height)
    right = min(width, left + max(1, int(w * width)))
    bottom = min(height, top + max(1, int(h * height)))
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (left, top, right, bottom))
    x1, y1, x2, y2 = crop_box(mask, padding, aspect)
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    # The mask's box grown by the padding (within the picture) is all inside the crop.
    assert x1 <= max(0, left - padding) and x2 >= min(width, right + padding)
    assert y1 <= max(0, top - padding) and y2 >= min(height, bottom + padding)
    crop_width, crop_height, ratio = x2 - x1, y2 - y1, aspect[0] / aspect[1]
    if crop_width < width and crop_height < height:  # not clamped: the pass's aspect, to a pixel
        assert (
            min(abs(crop_width - crop_height * ratio), abs(crop_height - crop_width / ratio)) <= 1
        )


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.integers(0, 255), min_size=16, max_size=16),
    alpha=st.one_of(st.none(), st.lists(st.integers(0, 255), min_size=16, max_size=16)),
)
def test_any_mask_becomes_binary_or_is_refused_as_empty(
    values: list[int], alpha: list[int] | None
) -> None:
    grey = np.array(values, np.uint8).reshape(4, 4)
    if alpha is None:
        mask, brightness = Image.fromarray(grey, "L"), grey.astype(int)
    else:
        opacity = np.array(alpha, np.uint8).reshape(4, 4)
        mask = Image.fromarray(np.stack([grey, opacity], axis=-1), "LA")
        brightness = grey.astype(int) * opacity // 255  # over black, as PIL's multiply rounds down
    expected = np.where(brightness >= 128, 255, 0)
    if not expected.any():
        with pytest.raises(UserError, match="the mask is empty"):
            prepare_mask(mask, (4, 4))
        return
    binary, notes = prepare_mask(mask, (4, 4))
    assert np.array_equal(pixels(binary), expected)
    assert bool(notes) == bool(expected.all())
