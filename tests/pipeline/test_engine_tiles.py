"""The tiled upscale on the tiny model: sizes, no seams, progress in tiles, cancel between tiles."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.backend import BatchInterrupted, ImageTask
from pipeline.engine import Engine
from pipeline.request import GenerationRequest, Mode, TileSpec
from pipeline.tiles import tile_layout
from tests.pipeline.engine_helpers import pixels, run, tiny_engine


@pytest.fixture(scope="module")
def engine() -> Engine:
    return tiny_engine()


def _picture(tmp_path: Path, size: int, colour: tuple[int, int, int] | None = None) -> Path:
    """A smooth gradient (or one flat colour) as the image to upscale."""
    if colour is not None:
        image = Image.new("RGB", (size, size), colour)
    else:
        y, x = np.mgrid[0:size, 0:size] / size
        rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + 3 * y)], axis=-1) * 255
        image = Image.fromarray(rgb.astype(np.uint8))
    path = tmp_path / "picture.png"
    image.save(path)
    return path


def _upscale(picture: Path, size: int, **changes: Any) -> GenerationRequest:
    request = GenerationRequest(
        "a castle on a hill",
        mode=Mode.UPSCALE,
        init_image=str(picture),
        width=size,
        height=size,
        steps=2,
        strength=0.5,
        seed=7,
        tiles=TileSpec(256, 64, 4),
    )
    return replace(request, **changes)


def test_one_tile_is_the_whole_image_pass(engine: Engine, tmp_path: Path) -> None:
    # The blend of a single tile is that tile's own prediction (weighed, then divided by its
    # weights again: float rounding only), so the image is the whole-image pass's.
    request = _upscale(_picture(tmp_path, 128), 256)
    assert len(tile_layout(256, 256, TileSpec(256, 64))) == 1
    tiled = run(engine, request)[0]
    whole = run(engine, request, tiles=None)[0]
    assert np.abs(pixels(tiled) - pixels(whole)).max() <= 1


def test_a_4x_upscale_of_256_gives_1024_reporting_tiles_with_whole_canvas_previews(
    engine: Engine, tmp_path: Path
) -> None:
    request = _upscale(_picture(tmp_path, 256), 1024, steps=1)
    tiles = len(tile_layout(1024, 1024, request.tiles or TileSpec()))
    assert tiles == 25  # 128 cells in 32-cell tiles overlapping by at least 8: 5 a side
    calls = int(0.5 * 1) + 1  # A1111's img2img plan: t_enc + 1 denoiser calls
    reports: list[tuple[int, int]] = []
    previews: list[Image.Image] = []

    def on_step(step: int, total: int, preview: Any) -> None:
        reports.append((step, total))
        if not previews:
            previews.extend(preview())

    result = engine.run([ImageTask("up", 0, request)], on_step, lambda: False)[0]
    assert result.image.size == (1024, 1024)
    assert "Denoising strength: 0.5" in result.parameters
    # Every tile batch of 4 is reported, in tiles done of tiles x calls.
    per_call = [min(done, tiles) for done in range(4, tiles + 4, 4)]
    expected = [(call * tiles + done, tiles * calls) for call in range(calls) for done in per_call]
    assert reports == expected
    assert previews[0].width == previews[0].height  # the whole square canvas, not one tile
    assert previews[0].width >= 128


def _seam_and_inside(image: Image.Image, spec: TileSpec) -> tuple[float, float]:
    """Mean absolute difference of neighbouring pixels across every tile border, and inside."""
    values = np.asarray(image, dtype=np.float64)
    tiles = tile_layout(image.width, image.height, spec)
    edges = {8 * v for tile in tiles for v in (tile.left, tile.left + tile.width)}
    borders = sorted(edges - {0, image.width})
    across = np.abs(np.diff(values, axis=1)).mean(axis=(0, 2))  # [x - 1]: between x - 1 and x
    down = np.abs(np.diff(values, axis=0)).mean(axis=(1, 2))
    seam = [across[x - 1] for x in borders] + [down[y - 1] for y in borders]
    inside = [i for i in range(len(across)) if i + 1 not in borders]
    return float(np.mean(seam)), float(np.mean(np.concatenate([across[inside], down[inside]])))


def test_blended_tiles_leave_no_seam_where_unblended_ones_do(
    engine: Engine, tmp_path: Path
) -> None:
    # A flat picture redrawn at 0.75: only the model's own drawing varies across the image.
    picture = _picture(tmp_path, 128, (120, 130, 110))
    blended = TileSpec(256, 64)
    unblended = TileSpec(256, 0)  # tiles side by side, each cell from one tile only
    request = _upscale(picture, 512, steps=6, strength=0.75)
    seam, inside = _seam_and_inside(run(engine, request, tiles=blended)[0].image, blended)
    assert seam <= inside
    seam, inside = _seam_and_inside(run(engine, request, tiles=unblended)[0].image, unblended)
    assert seam > inside


def test_cancel_between_tiles_stops_the_job_after_that_tile(engine: Engine, tmp_path: Path) -> None:
    request = _upscale(_picture(tmp_path, 128), 512, tiles=TileSpec(256, 64, 1))
    unet = engine.models.get("tiny").pipe.unet
    calls: list[int] = []
    handle = unet.register_forward_pre_hook(lambda *_: calls.append(1))
    done = [0]

    def on_step(step: int, total: int, preview: Any) -> None:
        done[0] = step

    try:
        with pytest.raises(BatchInterrupted):
            engine.run([ImageTask("up", 0, request)], on_step, lambda: done[0] >= 3)
    finally:
        handle.remove()
    # "a castle on a hill" and the empty negative are both one chunk: one UNet call a tile.
    assert len(calls) == 3
    assert done[0] == 3
