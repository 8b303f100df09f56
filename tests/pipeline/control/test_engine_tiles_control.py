"""ControlNet units in tiled upscales: each tile batch is guided by its own crop of the map.

The expected crops are cut here from the map resized with PIL's Lanczos (what diffusers'
ControlNet pipeline is fed at the pass's size), at each tile's latent box times 8.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.engine import Engine
from pipeline.request import ControlUnit, GenerationRequest, Mode, TileSpec
from pipeline.tiles import Tile, tile_layout
from tests.control_files import tiny_controlnet, write_original_layout
from tests.pipeline.control.test_engine_control import controlnet_calls, picture
from tests.pipeline.engine_helpers import pixels, run, tiny_engine
from tests.pipeline.fakes import DictFiles


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiles-control")
    picture(3, 96).save(folder / "source.png")
    return folder


@pytest.fixture(scope="module")
def engine(folder: Path) -> Engine:
    engine = tiny_engine()
    path = write_original_layout(folder / "tile.safetensors", tiny_controlnet(1))
    engine.controlnets = DictFiles({"tile": path}, "ControlNet")
    return engine


def upscale(folder: Path, size: int, tiles: TileSpec, weight: float = 1.0) -> GenerationRequest:
    source = str(folder / "source.png")
    return GenerationRequest(
        "a castle on a hill",
        mode=Mode.UPSCALE,
        init_image=source,
        width=size,
        height=size,
        steps=2,
        strength=0.5,
        seed=7,
        tiles=tiles,
        controls=(ControlUnit("tile", source, weight=weight),),
    )


def test_one_tile_with_a_unit_is_the_whole_image_pass_with_it(engine, folder) -> None:
    request = upscale(folder, 256, TileSpec(256, 64, 4))
    assert len(tile_layout(256, 256, TileSpec(256, 64))) == 1
    tiled = pixels(run(engine, request)[0])
    whole = pixels(run(engine, request, tiles=None)[0])
    assert np.abs(tiled - whole).max() <= 1
    unguided = pixels(run(engine, request, controls=())[0])
    assert np.abs(tiled - unguided).mean() > 1, "the unit guides the tile"


def test_each_tile_batch_controlnet_sees_its_own_crop_of_the_map(engine, folder) -> None:
    spec = TileSpec(256, 64, 2)
    request = upscale(folder, 384, spec)
    tiles = tile_layout(384, 384, spec)
    assert len(tiles) == 4  # 48 cells in 32-cell tiles overlapping by at least 8: 2 a side
    resized = Image.open(folder / "source.png").resize((384, 384), Image.Resampling.LANCZOS)
    full = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255).permute(2, 0, 1)

    def crop(tile: Tile) -> torch.Tensor:
        top, left = 8 * tile.top, 8 * tile.left
        return full[:, top : top + 8 * tile.height, left : left + 8 * tile.width]

    with controlnet_calls() as seen:
        run(engine, request)
    calls = int(0.5 * 2) + 1  # A1111's img2img plan: t_enc + 1 denoiser calls
    assert len(seen) == calls * 2  # two batches of two tiles a call
    for number, call in enumerate(seen):
        batch = tiles[2 * (number % 2) : 2 * (number % 2) + 2]
        crops = torch.stack([crop(tile) for tile in batch])
        expected = torch.cat([crops, crops])  # the negative's rows, then the prompt's
        assert call["cond"].shape == (4, 3, 256, 256)
        assert torch.allclose(call["cond"], expected, atol=1e-6)


def test_a_weight_0_tile_unit_gives_the_unguided_image_bit_for_bit(engine, folder) -> None:
    request = upscale(folder, 384, TileSpec(256, 64, 2), weight=0.0)
    guided = pixels(run(engine, request)[0])
    unguided = pixels(run(engine, replace(request, controls=()))[0])
    assert np.array_equal(guided, unguided)
