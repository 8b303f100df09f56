"""ControlNet units of a request (`App.controls`): which model, which preprocessor, the map.

A unit is asked for with a picture, a model (or none: the library's one enabled model), a weight,
a start and an end, and a preprocessor (or none: the model's type decides, `canny` for a canny
model, else the picture is taken as a ready map). Every check runs before any picture is
decoded; the picture then takes the checks of an image to image upload (`decode_picture`: no
bombs, no animations), and its map is made off the event loop at the request's base size and
held in the uploads folder like an init image, kept only if the job is queued.

The rules (`plan_units`, `make_map`) are plain functions, so the CLI, whose maps live in its
scratch folder, follows them too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.uploads import Uploads, check_picture_size, decode_picture
from pipeline.control.annotators import Annotators
from pipeline.control.model_types import ControlType, default_preprocessor
from pipeline.control.preprocess import control_map
from pipeline.errors import UserError
from pipeline.limits import check_controls
from pipeline.prompt.suggestions import index_of
from pipeline.request import MAX_CONTROL_UNITS, ControlUnit, GenerationRequest

if TYPE_CHECKING:
    from PIL import Image

    from data.generations import Generation


class ControlModel(Protocol):
    """A ControlNet library entry, as far as the units need it."""

    @property
    def name(self) -> str: ...
    @property
    def control_type(self) -> str: ...
    @property
    def enabled(self) -> bool: ...


class ControlModels(Protocol):
    """The ControlNet library (`App.libraries.controlnets`, or the CLI's)."""

    async def list(self, search: str | None = None) -> list[Any]: ...


@dataclass(frozen=True)
class ControlAsk:
    """One unit as a user asked for it (slash-command options, a CLI unit's flags); None: not
    given, the defaults apply."""

    picture: bytes | None = None
    model: str | None = None
    weight: float | None = None
    start: float | None = None
    end: float | None = None
    preprocessor: str | None = None


@dataclass(frozen=True)
class PlannedUnit:
    """A checked unit whose map is still to be made of `picture` (its `image` is empty)."""

    unit: ControlUnit
    picture: bytes
    control_type: str


@dataclass(frozen=True)
class ShownUnit:
    """A unit as Info shows it: its model's type (None once the model is gone) and its map
    (None when the file is not Dreamcord's to show, such as a CLI run's temporary map)."""

    number: int
    unit: ControlUnit
    control_type: str | None
    map_path: Path | None


def choose_model(name: str | None, models: Sequence[ControlModel]) -> ControlModel:
    """The model `name` names (any letter case), or the only enabled one when none is named;
    a UserError with "did you mean" otherwise."""
    enabled = [model for model in models if model.enabled]
    listed = ", ".join(sorted((model.name for model in enabled), key=str.lower))
    if name is None or not name.strip():
        if len(enabled) == 1:
            return enabled[0]
        if not enabled:
            raise UserError(
                "no ControlNet model is installed yet: an admin adds one with /controlnet add"
            )
        raise UserError(f"a control image needs a ControlNet model: name one of {listed}")
    by_name = {model.name: model for model in models}
    found = index_of(frozenset(by_name)).find(name.strip())
    if found is None:
        close = index_of([model.name for model in enabled]).closest(name.strip())
        if close:
            hint = "did you mean " + " or ".join(map(repr, close)) + "?"
        elif enabled:
            hint = f"the installed ones are {listed}"
        else:
            hint = "none is installed yet (an admin adds one with /controlnet add)"
        raise UserError(f"there is no ControlNet model named {name.strip()!r}: {hint}")
    model = by_name[found]
    if not model.enabled:
        raise UserError(f"the ControlNet model {model.name!r} is disabled: an admin can enable it")
    return model


def tile_model(models: Sequence[ControlModel]) -> str | None:
    """The enabled ControlNet of type tile that guides tiled upscales: the first by name."""
    enabled = [model for model in models if model.enabled]
    tiles = [model.name for model in enabled if model.control_type == ControlType.TILE]
    return min(tiles, key=str.lower, default=None)


def plan_units(
    request: GenerationRequest,
    asks: Sequence[ControlAsk],
    models: Sequence[ControlModel],
    annotators: Annotators,
) -> tuple[PlannedUnit, ...]:
    """The units `asks` make, checked as the request will be (`check_controls`), their
    annotator models too, before any picture is decoded; a UserError names the unit to fix."""
    if len(asks) > MAX_CONTROL_UNITS:
        raise UserError(f"{len(asks)} ControlNet units asked for: use at most {MAX_CONTROL_UNITS}")
    planned = []
    for number, ask in enumerate(asks, start=1):
        which = "the ControlNet unit" if len(asks) == 1 else f"ControlNet unit {number}"
        if ask.picture is None:
            raise UserError(
                f"{which} has no control image: attach the picture (or the ready map) it "
                "should follow"
            )
        model = choose_model(ask.model, models)
        preprocessor = ask.preprocessor or default_preprocessor(model.control_type)
        unit = ControlUnit(
            model=model.name,
            image="",
            weight=1.0 if ask.weight is None else ask.weight,
            start=0.0 if ask.start is None else ask.start,
            end=1.0 if ask.end is None else ask.end,
            preprocessor=preprocessor.strip().lower(),
        )
        planned.append(PlannedUnit(unit, ask.picture, model.control_type))
    check_controls(replace(request, controls=tuple(plan.unit for plan in planned)))
    if any(plan.unit.preprocessor == "depth" for plan in planned):
        annotators.check_depth()
    return tuple(planned)


def make_map(plan: PlannedUnit, width: int, height: int, annotators: Annotators) -> Image.Image:
    """The unit's map at `width`x`height`, its picture checked as an upload is (blocking:
    call it in a thread; a depth map runs its model there, on the CPU)."""
    picture = decode_picture(plan.picture)
    return control_map(picture, plan.unit.preprocessor, width, height, annotators)


class ControlService:
    """Units for requests, their maps held while the job is queued (see the module docstring)."""

    def __init__(self, models: ControlModels, uploads: Uploads, annotators: Annotators) -> None:
        self._models = models
        self._uploads = uploads
        self._annotators = annotators

    @staticmethod
    def check_picture(size: int) -> None:
        """Refuse a control image by its size, before downloading it."""
        check_picture_size(size)

    async def choices(self) -> list[tuple[str, str]]:
        """The enabled models as (name, type), for autocomplete."""
        return [(model.name, model.control_type) for model in await self._enabled()]

    @contextlib.asynccontextmanager
    async def held(
        self, request: GenerationRequest, asks: Sequence[ControlAsk]
    ) -> AsyncIterator[GenerationRequest]:
        """`request` with the units `asks` make, their maps stored at its size for the block
        that queues it (`Uploads.held_picture`); without asks, `request` as it is."""
        if not asks:
            yield request
            return
        planned = plan_units(request, asks, await self._models.list(), self._annotators)
        async with contextlib.AsyncExitStack() as stack:
            units = []
            for plan in planned:
                picture = await asyncio.to_thread(
                    make_map, plan, request.width, request.height, self._annotators
                )
                stored = await stack.enter_async_context(self._uploads.held_picture(picture))
                units.append(replace(plan.unit, image=str(stored.path)))
            yield replace(request, controls=tuple(units))

    async def shown(self, generation: Generation) -> tuple[ShownUnit, ...]:
        """The units of a generation the viewer may see (`Gallery.result` said so), with their
        model types and the maps kept in the uploads folder."""
        types = {model.name: model.control_type for model in await self._models.list()}
        shown = []
        for number, unit in enumerate(generation.request.controls, start=1):
            path = await asyncio.to_thread(_kept_map, unit.image, self._uploads.folder)
            shown.append(ShownUnit(number, unit, types.get(unit.model), path))
        return tuple(shown)

    async def _enabled(self) -> list[ControlModel]:
        return [model for model in await self._models.list() if model.enabled]


def _kept_map(image: str, folder: Path) -> Path | None:
    """The stored map `image` names, if it is a file in the uploads `folder` (blocking)."""
    path = Path(image).resolve()
    return path if path.is_relative_to(folder.resolve()) and path.is_file() else None
