"""A training run's loss as a small chart image, drawn with Pillow alone."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

WIDTH, HEIGHT = 360, 140
MARGIN = 8
SMOOTHING = 0.9
"""Of the exponential moving average drawn over the raw points (TensorBoard's default 0.6 reads
too noisy at one point per step; kohya's guides read a smoothed curve)."""


def smoothed(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    out: list[float] = []
    for value in values:
        out.append(value if not out else out[-1] * weight + value * (1 - weight))
    return out


def loss_chart(values: Sequence[float]) -> bytes:
    """A PNG of the losses (grey) and their moving average (orange), scaled to fit.

    A diverged step's NaN or infinite loss is left out: it has no place on the scale.
    """
    losses = [value for value in values if math.isfinite(value)]
    image = Image.new("RGB", (WIDTH, HEIGHT), (32, 34, 37))
    draw = ImageDraw.Draw(image)
    if losses:
        low, high = min(losses), max(losses)
        span = (high - low) or 1.0
        steps = max(1, len(losses) - 1)

        def point(index: int, value: float) -> tuple[float, float]:
            x = MARGIN + (WIDTH - 2 * MARGIN) * index / steps
            y = HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * (value - low) / span
            return x, y

        for values, colour in ((losses, (110, 110, 120)), (smoothed(losses), (255, 150, 40))):
            points = [point(index, value) for index, value in enumerate(values)]
            if len(points) == 1:
                x, y = points[0]
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
            else:
                draw.line(points, fill=colour, width=2)
        draw.text((MARGIN, MARGIN), f"loss {high:.4g}", fill=(200, 200, 200))
        draw.text((MARGIN, HEIGHT - MARGIN - 10), f"{low:.4g}", fill=(200, 200, 200))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
