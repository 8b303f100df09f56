"""Tiled img2img for big upscales: MultiDiffusion over overlapping latent tiles.

At every denoiser call the canvas (the whole image's latents) is cut into overlapping tiles of
the model's native size, each batch of tiles goes through the usual `Guidance`, and the tiles'
noise predictions are averaged back onto the canvas with weights that fade towards each tile's
edges (Mixture of Diffusers' Gaussian weights). The scheduler then steps the whole canvas once,
so every tile sees the same schedule and noise, and neighbours agree where they overlap: no seam.
docs/upscaling.md says why this blend and not A1111's tile-by-tile SD upscale, with figures.

The UNet only ever sees `batch` tiles, so memory follows the tile, not the image; the VAE encodes
and decodes in tiles too (diffusers' tiled VAE, set to the request's tile size).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from pipeline.backend import BatchInterrupted
from pipeline.control.units import ControlAddition
from pipeline.guidance import Guidance, ImageConditioning, UnetAddition
from pipeline.request import TileSpec
from pipeline.tiles import LATENT_FACTOR, Tile, tile_layout

WEIGHT_VARIANCE = 0.01
"""Mixture of Diffusers' Gaussian tile weights: a standard deviation of a tenth of the tile."""


class Predictor(Protocol):
    """What the step loop asks at each denoiser call: `Guidance.predict`'s signature."""

    def predict(
        self,
        unet: Any,
        latents: torch.Tensor,
        timestep: Any,
        call: int,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


GuideFactory = Callable[
    [Sequence[ImageConditioning], float, torch.device, torch.dtype, Sequence[UnetAddition]],
    Predictor,
]
"""Builds a pass's predictor from its conditioning, CFG, device, dtype and UNet additions:
`Guidance` itself, or `TiledPass.guide` for a tiled pass."""


def tile_weights(height: int, width: int) -> torch.Tensor:
    """A (height, width) Gaussian bump over a tile: 1 at its centre, near 0 at its edges.

    Every weight stays positive, so a cell that only one tile covers keeps that tile's value.
    """

    def along(length: int) -> torch.Tensor:
        offsets = (torch.arange(length, dtype=torch.float64) - (length - 1) / 2) / length
        return torch.exp(-(offsets**2) / (2 * WEIGHT_VARIANCE))

    return torch.outer(along(height), along(width)).float()


def pixel_area(tile: Tile) -> tuple[slice, slice]:
    """The (rows, columns) slices of the pass's pixels that `tile` covers."""
    rows, columns = tile.area
    return (
        slice(rows.start * LATENT_FACTOR, rows.stop * LATENT_FACTOR),
        slice(columns.start * LATENT_FACTOR, columns.stop * LATENT_FACTOR),
    )


TilesDone = Callable[[int, int, torch.Tensor], None]
"""Told (denoiser call from 0, tiles done in that call, the canvas) after each tile batch."""


class TiledGuidance:
    """`Guidance.predict` over the canvas, tile batch by tile batch, blended by tile weights.

    `guidance_for(tiles)` gives the predictor for one batch of tiles: its rows are the tiles in
    order, each with the group's images, so the group's conditioning repeats once per tile (and
    a ControlNet unit's maps are cropped to those tiles in the same order).
    """

    def __init__(
        self,
        tiles: Sequence[Tile],
        batch: int,
        guidance_for: Callable[[Sequence[Tile]], Predictor],
        on_tiles: TilesDone,
        should_stop: Callable[[], bool],
    ) -> None:
        self._tiles = tuple(tiles)
        self._batch = batch
        self._guidance_for = guidance_for
        self._on_tiles = on_tiles
        self._should_stop = should_stop
        self._weights = tile_weights(self._tiles[0].height, self._tiles[0].width)

    def predict(
        self,
        unet: Any,
        latents: torch.Tensor,
        timestep: Any,
        call: int,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The blended guided noise prediction for the whole canvas `latents`."""
        assert extra is None  # tiled passes are upscales: no inpainting channels
        images = len(latents)
        weights = self._weights.to(latents.device)
        total = torch.zeros(latents.shape, dtype=torch.float32, device=latents.device)
        coverage = torch.zeros(latents.shape[2:], dtype=torch.float32, device=latents.device)
        for first in range(0, len(self._tiles), self._batch):
            if self._should_stop():
                raise BatchInterrupted
            tiles = self._tiles[first : first + self._batch]
            rows = torch.cat([latents[(..., *tile.area)] for tile in tiles])
            guided = self._guidance_for(tiles).predict(unet, rows, timestep, call).float()
            for number, tile in enumerate(tiles):
                part = guided[number * images : (number + 1) * images]
                total[(..., *tile.area)] += part * weights
                coverage[tile.area] += weights
            self._on_tiles(call, first + len(tiles), latents)
        return (total / coverage).to(latents.dtype)


@dataclass(frozen=True)
class TiledPass:
    """A tiled pass's layout and reporting, ready to build its predictor in the step loop."""

    tiles: tuple[Tile, ...]
    batch: int
    on_tiles: TilesDone
    should_stop: Callable[[], bool]

    @classmethod
    def of(
        cls,
        spec: TileSpec,
        width: int,
        height: int,
        on_tiles: TilesDone,
        should_stop: Callable[[], bool],
    ) -> TiledPass:
        return cls(tuple(tile_layout(width, height, spec)), spec.batch, on_tiles, should_stop)

    def guide(
        self,
        conditioning: Sequence[ImageConditioning],
        cfg: float,
        device: torch.device,
        dtype: torch.dtype,
        additions: Sequence[UnetAddition] = (),
    ) -> TiledGuidance:
        """The pass's predictor: a `GuideFactory`.

        Each tile batch's rows get the ControlNet units' maps cropped to their tiles' pixels
        (`ControlAddition.cropped`); `check_tiles` refuses every other addition.
        """
        controls = [addition for addition in additions if isinstance(addition, ControlAddition)]
        assert len(controls) == len(additions)
        by_tiles: dict[tuple[Tile, ...], Guidance] = {}

        def guidance_for(tiles: Sequence[Tile]) -> Guidance:
            key = tuple(tiles)
            if key not in by_tiles:
                areas = [pixel_area(tile) for tile in tiles]
                cropped = [control.cropped(areas) for control in controls]
                rows = list(conditioning) * len(tiles)
                by_tiles[key] = Guidance(rows, cfg, device, dtype, cropped)
            return by_tiles[key]

        return TiledGuidance(self.tiles, self.batch, guidance_for, self.on_tiles, self.should_stop)


def configure_vae_tiles(vae: Any, spec: TileSpec | None) -> None:
    """Set diffusers' tiled VAE to the request's tiles, or back to its own defaults.

    diffusers blends a tile over `tile_overlap_factor` of its side; the request's overlap is in
    pixels, so it becomes that fraction of the tile.
    """
    size = spec.size if spec is not None else vae.config.sample_size
    size = size[0] if isinstance(size, list | tuple) else size
    downsampling = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.tile_sample_min_size = size
    vae.tile_latent_min_size = size // downsampling
    vae.tile_overlap_factor = spec.overlap / spec.size if spec is not None else 0.25
