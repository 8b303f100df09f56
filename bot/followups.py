"""Requests that grow out of an earlier image: upscale, variations, reroll, edit.

Everything but the changed fields is kept from the stored generation, so the follow-up uses
the same prompt, LoRAs, sampler and model, and the same ControlNet units with their stored maps
(made at the request's size; the engine resizes a map to an upscale's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from bot.requests import random_seed
from pipeline.request import MAX_CONTROL_UNITS, ControlUnit, GenerationRequest, Mode, TileSpec
from pipeline.sizes import round_to

UPSCALE_FACTOR = 2
UPSCALE_DENOISE = 0.3
"""A pixel upscale is refined at low denoise: enough to add detail, too little to redraw."""
VARIATION_STRENGTH = {"subtle": 0.12, "strong": 0.35}
EDIT_FIELD = "Edit"
"""The `extras` key (also in the PNG's parameters) that says which edit made an image
(`bot.edits`); Reroll keeps it (it redoes the edit), U and V do not (they start from its
result)."""


def without_edit(request: GenerationRequest) -> GenerationRequest:
    """`request` with no mask, mask settings or edit label: for what starts from an edit's
    result rather than redoing the edit."""
    extras = tuple((key, value) for key, value in request.extras if key != EDIT_FIELD)
    return replace(request, mask_image=None, inpaint=None, extras=extras)


def upscale(
    request: GenerationRequest,
    image_path: Path,
    seed: int,
    image_id: int | None,
    factor: int = UPSCALE_FACTOR,
) -> GenerationRequest:
    """`factor` 2 (the U button) or 4 (the CLI, when memory allows: an out-of-memory fails
    only this job, with a message)."""
    return replace(
        request,
        mode=Mode.UPSCALE,
        init_image=str(image_path),
        width=round_to(request.width * factor, 8),
        height=round_to(request.height * factor, 8),
        strength=UPSCALE_DENOISE,
        seed=seed,
        count=1,
        hires=None,
        variation_seed=None,
        variation_strength=0.0,
        parent_image_id=image_id,
    )


UPSCALE_MODES = ("subtle", "creative")
"""Midjourney's two upscalers: Subtle keeps the picture, Creative redraws it with more detail."""


@dataclass(frozen=True)
class TiledUpscale:
    """A server's choices for tiled upscales (/settings; defaults here), docs/upscaling.md.

    Pixel upscalers want 0.3-0.4 to add detail without redrawing (sd15.md); Subtle stays under
    that, Creative goes over it, as far as a tile can go before it draws its own subject.
    """

    steps: int = 20
    subtle: float = 0.25
    creative: float = 0.45
    tile: int = TileSpec.size
    overlap: int = TileSpec.overlap

    def denoise(self, mode: str) -> float:
        return self.subtle if mode == "subtle" else self.creative


def tiled_upscale(
    request: GenerationRequest,
    image_path: Path,
    seed: int,
    image_id: int | None,
    factor: int,
    mode: str,
    choices: TiledUpscale = TiledUpscale(),
) -> GenerationRequest:
    """An upscale by `factor` in blended tiles (big images), at the `mode`'s denoise."""
    upscaled = upscale(request, image_path, seed, image_id, factor)
    return replace(
        upscaled,
        steps=choices.steps,
        strength=choices.denoise(mode),
        tiles=TileSpec(choices.tile, choices.overlap),
    )


TILE_WEIGHT = 1.0
"""A1111's tile upscale guides with the tile model at its unit default, weight 1
(sd-webui-controlnet's `ControlNetUnit.weight`)."""


def with_tile_control(request: GenerationRequest, model: str | None) -> GenerationRequest:
    """A tiled upscale guided by the ControlNet tile `model` (None: unguided, as it is), its
    map the source picture itself, so each tile keeps to its own part of the picture.

    A unit of that model left from an earlier upscale gives way (its map is the older, smaller
    picture); with every unit slot taken the request stays as it is.
    """
    assert request.init_image is not None  # an upscale's source
    kept = tuple(unit for unit in request.controls if unit.model != model)
    if model is None or len(kept) >= MAX_CONTROL_UNITS:
        return request
    tile = ControlUnit(model, request.init_image, weight=TILE_WEIGHT, preprocessor="none")
    return replace(request, controls=(*kept, tile))


def variations(
    request: GenerationRequest,
    seed: int,
    image_id: int | None,
    strength: str = "strong",
    count: int = 4,
) -> GenerationRequest:
    return replace(
        request,
        mode=Mode.VARIATION,
        seed=seed,
        count=count,
        variation_seed=random_seed(),
        variation_strength=VARIATION_STRENGTH[strength],
        init_image=None,
        strength=None,
        parent_image_id=image_id,
    )


def reroll(request: GenerationRequest) -> GenerationRequest:
    return replace(
        request,
        mode=Mode.REROLL,
        seed=random_seed(),
        variation_seed=None,
        variation_strength=0.0,
        parent_image_id=None,
    )
