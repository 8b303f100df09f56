"""Tile layout, tile limits, the tile spec in the request and what the queue charges for tiles."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import UserError
from pipeline.limits import Limits, check_request
from pipeline.planner import batch_key
from pipeline.queue import image_cost
from pipeline.request import GenerationRequest, Mode, TileSpec
from pipeline.tiles import tile_count, tile_layout

UPSCALE = GenerationRequest(
    "a castle", mode=Mode.UPSCALE, init_image="up.png", width=1024, height=1024, strength=0.3
)


@given(
    width=st.integers(1, 64).map(lambda n: n * 64),
    height=st.integers(1, 64).map(lambda n: n * 64),
    size=st.sampled_from([256, 320, 512, 768]),
    overlap=st.integers(0, 15).map(lambda n: n * 8),
)
def test_tiles_cover_every_cell_overlap_at_least_as_asked_and_share_one_shape(
    width: int, height: int, size: int, overlap: int
) -> None:
    spec = TileSpec(size, min(overlap, size // 2 - 8))
    tiles = tile_layout(width, height, spec)
    rows, columns = height // 8, width // 8
    covered = [[0] * columns for _ in range(rows)]
    for tile in tiles:
        assert (tile.height, tile.width) == (tiles[0].height, tiles[0].width)
        assert tile.top + tile.height <= rows and tile.left + tile.width <= columns
        for row in range(tile.top, tile.top + tile.height):
            for column in range(tile.left, tile.left + tile.width):
                covered[row][column] += 1
    assert all(all(cells) for cells in covered)
    lefts = sorted({tile.left for tile in tiles})
    for left, right in itertools.pairwise(lefts):
        assert left + tiles[0].width - right >= spec.overlap // 8
    # No more tiles than needed: one fewer per side would leave a gap or too little overlap.
    side, shared = min(size // 8, columns), spec.overlap // 8
    needed = 1 if columns <= side else math.ceil((columns - shared) / (side - shared))
    assert len(lefts) == needed


def test_a_4x_upscale_of_256_in_512_tiles_overlapping_by_64_takes_three_by_three() -> None:
    # 1024 px = 128 cells: two 64-cell tiles could not overlap, three spread 32 cells apart.
    tiles = tile_layout(1024, 1024, TileSpec(512, 64))
    assert [(t.top, t.left) for t in tiles[:3]] == [(0, 0), (0, 32), (0, 64)]
    assert len(tiles) == 9


def test_the_tile_spec_survives_json_and_splits_batches() -> None:
    tiled = replace(UPSCALE, tiles=TileSpec(384, 32, 2))
    assert GenerationRequest.from_json(tiled.to_json()) == tiled
    assert GenerationRequest.from_json(UPSCALE.to_json()).tiles is None
    assert batch_key(tiled) != batch_key(UPSCALE)
    assert batch_key(tiled) != batch_key(replace(tiled, tiles=TileSpec(384, 64, 2)))


def test_the_queue_charges_a_tiled_upscale_for_every_tile_at_every_step() -> None:
    tiled = replace(UPSCALE, steps=20, tiles=TileSpec(512, 64))
    assert tile_count(tiled) == 9
    assert image_cost(tiled) == 9 * 512 * 512 * 20
    # The overlaps make it dearer than one whole-image pass of the same size.
    assert image_cost(tiled) > image_cost(replace(tiled, tiles=None))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TileSpec(500, 64), "tile size 500 is not allowed: use a multiple of 64 from 256 up"),
        (TileSpec(192, 32), "tile size 192 is not allowed: use a multiple of 64 from 256 up"),
        (TileSpec(512, 256), "overlap 256 is not allowed: use a multiple of 8 smaller than half"),
        (TileSpec(512, 300), "overlap 300 is not allowed"),
        (TileSpec(512, 60), "overlap 60 is not allowed"),
        (TileSpec(512, 64, 0), "tile batch 0 is out of range: use 1 to 16"),
    ],
)
def test_bad_tiles_are_refused_with_how_to_fix_them(spec: TileSpec, message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_request(replace(UPSCALE, tiles=spec), Limits())


def test_an_upscale_over_the_server_limit_is_refused_with_the_largest_allowed() -> None:
    limits = Limits(max_upscale_pixels=2048 * 2048)
    big = replace(UPSCALE, width=4096, height=2048, tiles=TileSpec())
    largest = "limit of 4,194,304 pixels: the largest allowed is 2896x1448"
    with pytest.raises(UserError, match=largest):
        check_request(big, limits)
    assert check_request(replace(big, width=2048), limits).tiles == TileSpec()


def test_tiles_are_only_for_upscales() -> None:
    with pytest.raises(UserError, match="tiles are for upscales"):
        check_request(GenerationRequest("a castle", tiles=TileSpec()), Limits())


def test_controlnet_units_are_allowed_with_tiles_but_image_prompts_are_not() -> None:
    from pipeline.request import ControlUnit, ImagePrompt

    guided = replace(UPSCALE, tiles=TileSpec(), controls=(ControlUnit("tile", "map.png"),))
    assert check_request(guided, Limits()).controls == guided.controls
    prompted = replace(UPSCALE, tiles=TileSpec(), image_prompts=(ImagePrompt("face.png"),))
    with pytest.raises(UserError, match="image prompts do not work with tiled upscales"):
        check_request(prompted, Limits())
