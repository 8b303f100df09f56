"""The loss chart: any run's losses give a small PNG, its line where the losses are."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cogs.charts import HEIGHT, WIDTH, loss_chart, smoothed


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=300))
def test_any_losses_give_a_chart_of_the_fixed_size(losses: list[float]) -> None:
    chart = Image.open(io.BytesIO(loss_chart(losses)))
    assert chart.format == "PNG" and chart.size == (WIDTH, HEIGHT)


def test_a_falling_loss_is_drawn_from_top_left_to_bottom_right() -> None:
    chart = Image.open(io.BytesIO(loss_chart([1.0 - step / 100 for step in range(100)])))
    background = chart.getpixel((WIDTH // 2, 2))

    def drawn_rows(x: int) -> list[int]:
        return [y for y in range(HEIGHT) if chart.getpixel((x, y)) != background]

    left, right = drawn_rows(12), drawn_rows(WIDTH - 12)
    assert left and right and min(left) < min(right)


def test_smoothing_follows_a_step_slowly() -> None:
    # An exponential moving average with weight 0.9 (TensorBoard's formula).
    assert smoothed([0.0, 1.0, 1.0], 0.9) == pytest.approx([0.0, 0.1, 0.19])
