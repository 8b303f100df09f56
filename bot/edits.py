"""Edits of a result or of an uploaded picture (`App.edits`): Vary (Region), Zoom Out, Pan,
Make Square, and a painted mask.

An edit is a masked pass: a canvas (the picture, grown for Zoom Out, Pan and Make Square) and a
mask of what to repaint, both built by `pipeline.canvas`. They are scaled to fit the server's
pixel limit, then stored in the uploads folder as image to image pictures are: held while the
request is composed and queued, and kept only if a job uses them, so a refused edit leaves
nothing behind.

Strength: a region repaint keeps the picture's colours and layout as a start ("original" fill)
and moves 0.75 away from them, A1111's inpainting default, so the new prompt shows without the
region losing its place in the picture. New canvas has nothing worth keeping (its pixels are
the picture's edges stretched), so outpainting starts from fresh noise ("latent noise") at
strength 1.0: the new area is drawn, not smeared, and the kept part, pasted back, steers it.

The operation is the result's lineage: its mode (inpaint or outpaint) is stored with the
generation, its parent image id too, and what exactly was done (`zoom-out 2`, `vary-region
top-left,top`) is an `extras` entry, so Info and the PNG's parameters show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from PIL import Image

from bot.followups import EDIT_FIELD
from bot.gallery import Gallery
from bot.request_builder import RequestBuilder
from bot.uploads import Uploads, decode_picture
from data.generations import Generation
from pipeline.canvas import (
    MASK_THRESHOLD,
    Canvas,
    check_zoom,
    make_square,
    mask_covers_all_note,
    pan,
    prepare_mask,
    region_mask,
    zoom_out,
)
from pipeline.errors import UserError
from pipeline.request import GenerationRequest, InpaintSpec, Mode
from pipeline.sizes import fit_size

REGION_STRENGTH = 0.75
MASK_STRENGTH = REGION_STRENGTH
OUTPAINT_STRENGTH = 1.0
OUTPAINT_FILL = "latent noise"


class Operation(StrEnum):
    """What an edit does; the value is its name in lineage."""

    VARY_REGION = "vary-region"
    ZOOM_OUT = "zoom-out"
    PAN = "pan"
    SQUARE = "square"
    MASK = "mask"


@dataclass(frozen=True)
class Edit:
    """One edit of a result: the operation and what it needs.

    `prompt` None keeps the result's own prompt (Zoom Out 2x, Pan, Make Square).
    """

    operation: Operation
    prompt: str | None = None
    regions: tuple[str, ...] = ()
    factor: float = 2.0
    direction: str = ""

    @property
    def label(self) -> str:
        """The edit as lineage records it: `zoom-out 1.5`, `pan left`, `vary-region top,left`."""
        detail = {
            Operation.VARY_REGION: ",".join(self.regions),
            Operation.ZOOM_OUT: f"{self.factor:g}",
            Operation.PAN: self.direction,
        }.get(self.operation, "")
        return f"{self.operation} {detail}".strip()


@dataclass(frozen=True)
class PreparedEdit:
    """A composed edit request, its pictures held, and notes for the user (mask fixes)."""

    request: GenerationRequest
    notes: tuple[str, ...] = ()


def parse_factor(text: str) -> float:
    """A zoom factor typed in Custom Zoom: `1.5`, `1,5` or `1.5x`; a UserError that says the
    range otherwise."""
    cleaned = text.strip().lower().removesuffix("x").strip().replace(",", ".")
    try:
        factor = float(cleaned)
    except ValueError:
        raise UserError(
            f"zoom factor {text.strip()[:20]!r} is not a number: type one such as 1.5"
        ) from None
    return check_zoom(factor)


def edit_label(request: GenerationRequest) -> str | None:
    """Which edit made this request's images, if one did."""
    return dict(request.extras).get(EDIT_FIELD)


class EditService:
    """Builds, stores and composes edits (see the module docstring); `App.jobs` queues them."""

    def __init__(
        self, requests: RequestBuilder, gallery: Gallery, uploads: Uploads, max_pixels: int
    ) -> None:
        self._requests = requests
        self._gallery = gallery
        self._uploads = uploads
        self._max_pixels = max_pixels

    @contextlib.asynccontextmanager
    async def of_result(
        self, generation: Generation, index: int, edit: Edit, user_id: int, guild_id: int | None
    ) -> AsyncIterator[PreparedEdit]:
        """The edit of image `index` of `generation`, its pictures held for the block that
        queues it (`Uploads.held`)."""
        image = generation.images[index]
        path = self._gallery.image_path(image)
        canvas = await asyncio.to_thread(_canvas_of_result, path, edit)
        options = {"strength": _strength_of(edit)}
        async with self._held(canvas, edit, generation.request, options, user_id, guild_id) as (
            request,
            notes,
        ):
            yield PreparedEdit(replace(request, parent_image_id=image.id), notes)

    @contextlib.asynccontextmanager
    async def of_upload(
        self,
        picture: bytes,
        mask: bytes,
        prompt: str,
        options: Mapping[str, Any],
        user_id: int,
        guild_id: int | None,
    ) -> AsyncIterator[PreparedEdit]:
        """`/edit`: repaint the white part of `mask` over `picture`, both checked as image to
        image uploads are. `options` are /imagine's (`strength`, `mask_blur`, `inpaint_area`)."""
        canvas, notes = await asyncio.to_thread(_canvas_of_upload, picture, mask)
        chosen = {key: value for key, value in options.items() if value is not None}
        spec = InpaintSpec(
            mask_blur=chosen.pop("mask_blur", InpaintSpec.mask_blur),
            area=chosen.pop("inpaint_area", InpaintSpec.area),
        )
        chosen.setdefault("strength", MASK_STRENGTH)
        edit = Edit(Operation.MASK, prompt=prompt)
        async with self._held(canvas, edit, None, chosen, user_id, guild_id, spec) as (
            request,
            held_notes,
        ):
            yield PreparedEdit(request, tuple(dict.fromkeys(notes + held_notes)))

    @contextlib.asynccontextmanager
    async def _held(
        self,
        canvas: Canvas,
        edit: Edit,
        base: GenerationRequest | None,
        options: Mapping[str, Any],
        user_id: int,
        guild_id: int | None,
        spec: InpaintSpec | None = None,
    ) -> AsyncIterator[tuple[GenerationRequest, tuple[str, ...]]]:
        """Store the canvas and mask, compose the request over them, release after the block."""
        picture, mask = await asyncio.to_thread(_fitted_pngs, canvas, self._max_pixels)
        prompt = edit.prompt if edit.prompt is not None else (base.prompt if base else "")
        async with (
            self._uploads.held(picture) as init,
            self._uploads.held(mask) as stored_mask,
        ):
            assert init is not None and stored_mask is not None
            request = await self._requests.compose(
                prompt, {**options, "init": init, "count": 1}, user_id, guild_id, base=base
            )
            request = replace(
                request,
                hires=None,
                variation_seed=None,
                variation_strength=0.0,
                extras=(*request.extras, (EDIT_FIELD, edit.label)),
            )
            if _covers_all(canvas.mask):
                # Nothing is kept: a new picture at the canvas's size (the upload is let go).
                txt2img = replace(request, mode=Mode.TXT2IMG, init_image=None, strength=None)
                yield txt2img, (mask_covers_all_note(),)
                return
            yield (
                replace(
                    self._requests.companion(request),
                    mode=Mode.INPAINT if _repaints(edit) else Mode.OUTPAINT,
                    mask_image=str(stored_mask.path),
                    inpaint=spec or _spec_of(edit),
                ),
                (),
            )


def _canvas_of_result(path: Path, edit: Edit) -> Canvas:
    """The canvas and mask of a result image (blocking: PIL work)."""
    with Image.open(path) as opened:
        source = opened.convert("RGB")
    if edit.operation is Operation.VARY_REGION:
        return Canvas(source, region_mask(source.width, source.height, edit.regions))
    if edit.operation is Operation.ZOOM_OUT:
        return zoom_out(source, edit.factor)
    if edit.operation is Operation.PAN:
        return pan(source, edit.direction)
    if edit.operation is Operation.SQUARE:
        return make_square(source)
    raise ValueError(f"{edit.operation} is not an edit of a result")


def _canvas_of_upload(picture: bytes, mask: bytes) -> tuple[Canvas, tuple[str, ...]]:
    """The uploaded picture and its mask made binary at its size, with the notes on the mask."""
    image = decode_picture(picture)
    painted = decode_picture(mask, keep_alpha=True)
    binary, notes = prepare_mask(painted, image.size)
    return Canvas(image, binary), notes


def _fitted_pngs(canvas: Canvas, max_pixels: int) -> tuple[bytes, bytes]:
    """The canvas and its mask as PNGs at the size the job draws: within `max_pixels`, sides
    multiples of 8. Both at that size, so the engine's paste-back lines up pixel for pixel."""
    size = fit_size(*canvas.size, max_pixels)
    if canvas.size == size:
        return _png(canvas.image), _png(canvas.mask)
    image = canvas.image.resize(size, Image.Resampling.LANCZOS)
    return _png(image), _png(canvas.mask.resize(size, Image.Resampling.NEAREST))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _covers_all(mask: Image.Image) -> bool:
    """Whether the ("L") mask repaints every pixel."""
    low = mask.getextrema()[0]
    return isinstance(low, int | float) and low >= MASK_THRESHOLD


def _repaints(edit: Edit) -> bool:
    return edit.operation in (Operation.VARY_REGION, Operation.MASK)


def _strength_of(edit: Edit) -> float:
    return REGION_STRENGTH if _repaints(edit) else OUTPAINT_STRENGTH


def _spec_of(edit: Edit) -> InpaintSpec:
    return InpaintSpec() if _repaints(edit) else InpaintSpec(fill=OUTPAINT_FILL)
