"""Where the tiles of a tiled upscale lie: plain Python, so the queue can count them too."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.request import GenerationRequest, TileSpec

LATENT_FACTOR = 8


@dataclass(frozen=True)
class Tile:
    """One tile of the canvas, in latent cells."""

    top: int
    left: int
    height: int
    width: int

    @property
    def area(self) -> tuple[slice, slice]:
        """The (rows, columns) slices of the canvas this tile covers."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of `tile` cells start along a side of `length`, overlapping by at least
    `overlap`, spread evenly so the last one ends at the edge; one tile when the side fits."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def tile_layout(width: int, height: int, spec: TileSpec) -> list[Tile]:
    """The tiles of a `width` x `height` pixel image, row by row, all of one shape."""
    size, overlap = spec.size // LATENT_FACTOR, spec.overlap // LATENT_FACTOR
    rows, columns = height // LATENT_FACTOR, width // LATENT_FACTOR
    tile_height, tile_width = min(size, rows), min(size, columns)
    return [
        Tile(top, left, tile_height, tile_width)
        for top in tile_starts(rows, size, overlap)
        for left in tile_starts(columns, size, overlap)
    ]


def tile_count(request: GenerationRequest) -> int:
    """Tiles of the request's pass: each denoiser call runs the UNet over every one."""
    if request.tiles is None:
        return 1
    return len(tile_layout(request.width, request.height, request.tiles))
