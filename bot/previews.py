"""LoRA previews: the same prompt and seed at weights 0, 0.5 and 1, shown side by side.

After an admin adds a LoRA, three low-priority jobs are queued (any user's normal job goes
first). They belong to the bot's own user id, so they neither fill the admin's queue nor show
in anyone's history. `PreviewDelivery` keeps the presenter from posting them one by one: the
caller waits for all three (`collect`) and posts one labelled grid (`preview_grid`). After a
restart, preview jobs still in the database run and are dropped quietly (nobody waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bot.requests import build_request
from pipeline.errors import UserError
from pipeline.queue import Priority
from pipeline.request import GenerationRequest, LoraRef

if TYPE_CHECKING:
    from PIL import Image

    from bot.jobs import Delivery, JobService, Origin
    from bot.policy import Place
    from bot.settings import Settings
    from data.generations import Generation
    from data.jobs import Job as StoredJob

log = logging.getLogger(__name__)

PREVIEW_SEED = 1_234_567
PREVIEW_WEIGHTS = (0.0, 0.5, 1.0)
PREVIEW_FIELD = "Dreamcord preview"
"""The `extras` key (also written into the PNG's parameters) that marks a preview job."""
PREVIEW_PROMPT = "a portrait, detailed, soft light"
"""Used after the LoRA's trigger words; with none, it is the whole prompt."""
MAX_TRIGGERS_USED = 3
TILE_SIDE = 256


def is_preview(request: GenerationRequest) -> bool:
    return any(key == PREVIEW_FIELD for key, _ in request.extras)


def preview_prompt(triggers: Sequence[str]) -> str:
    return ", ".join([*triggers[:MAX_TRIGGERS_USED], PREVIEW_PROMPT])


def preview_requests(
    lora: str, triggers: Sequence[str], settings: Settings
) -> list[GenerationRequest]:
    """One single-image request per weight, same prompt, seed and settings (`.env` defaults).

    Weight 0 runs without the LoRA at all: the same picture, and no patching to undo.
    """
    requests = []
    for weight in PREVIEW_WEIGHTS:
        loras = () if weight == 0 else (LoraRef(lora, weight, weight),)
        built = build_request(
            preview_prompt(triggers),
            settings,
            explicit={"count": 1, "seed": PREVIEW_SEED},
            extra_loras=loras,
        )
        extras = ((PREVIEW_FIELD, f"{lora} at {weight:g}"),)
        requests.append(replace(built.request, extras=extras))
    return requests


@dataclass(frozen=True)
class PreviewImage:
    """One weight's outcome: its image file, or why there is none."""

    weight: float
    path: Path | None
    error: str | None = None


@dataclass(frozen=True)
class Preview:
    lora: str
    prompt: str
    seed: int
    images: tuple[PreviewImage, ...]


class LoraPreviews:
    """Queues a LoRA's preview jobs and collects their images."""

    def __init__(self, service: JobService, settings: Settings) -> None:
        self.service = service
        self.settings = settings

    async def queue(
        self, lora: str, triggers: Sequence[str], origin: Origin, place: Place | None = None
    ) -> list[str]:
        """Submit the three jobs at low priority; their job ids, in weight order.

        All or none: if one cannot be queued (the preview user's queue is full, or the
        `place` it is posted in refuses its trigger words), the ones already queued are
        cancelled and the UserError says so.
        """
        job_ids: list[str] = []
        try:
            for request in preview_requests(lora, triggers, self.settings):
                ticket = await self.service.submit(request, origin, Priority.LOW, place=place)
                job_ids.append(ticket.job_id)
        except UserError as error:
            for job_id in job_ids:
                await self._cancel(job_id, origin.user_id)
            raise UserError(f"the preview was not queued ({error})") from None
        return job_ids

    async def collect(self, lora: str, triggers: Sequence[str], job_ids: Sequence[str]) -> Preview:
        """Wait until every job is finished; failed or cancelled ones carry their error."""
        finished = await asyncio.gather(*(self.service.wait(job_id) for job_id in job_ids))
        images = []
        for weight, job in zip(PREVIEW_WEIGHTS, finished, strict=True):
            generation = await self.service.repos.generations.for_job(job.id)
            if generation is None or not generation.images:
                images.append(PreviewImage(weight, None, job.error or str(job.state)))
            else:
                path = self.service.images.path_of(generation.images[0].path)
                images.append(PreviewImage(weight, path))
        return Preview(lora, preview_prompt(triggers), PREVIEW_SEED, tuple(images))

    async def _cancel(self, job_id: str, user_id: int) -> None:
        with contextlib.suppress(UserError):  # already finished: nothing to undo
            await self.service.cancel(job_id, user_id, is_admin=True)


def preview_grid(preview: Preview, side: int = TILE_SIDE) -> bytes:
    """The images in one row, each labelled with its weight, as PNG (blocking: use a thread)."""
    from PIL import Image, ImageDraw, ImageFont

    tiles: list[Image.Image] = []
    for item in preview.images:
        if item.path is not None and item.path.is_file():
            tile = Image.open(item.path).convert("RGB")
            tile.thumbnail((side, side))
            tile = tile.resize((side, round(side * tile.height / tile.width)))
        else:
            tile = Image.new("RGB", (side, side), (40, 40, 40))
        tiles.append(tile)
    height = max(tile.height for tile in tiles)
    label_height = max(14, side // 10)
    grid = Image.new("RGB", (side * len(tiles), height + label_height), (0, 0, 0))
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=label_height - 4)
    for index, (tile, item) in enumerate(zip(tiles, preview.images, strict=True)):
        grid.paste(tile, (index * side, label_height))
        label = f"weight {item.weight:g}" if item.path else f"weight {item.weight:g}: failed"
        draw.text((index * side + 4, 2), label, font=font, fill=(255, 255, 255))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()


class PreviewDelivery:
    """A `Delivery` that passes every job to `inner` except previews, which `collect` shows."""

    def __init__(self, inner: Delivery) -> None:
        self.inner = inner

    def progress(self, job: StoredJob, step: int, total: int, preview: Image.Image | None) -> None:
        if not is_preview(job.request):
            self.inner.progress(job, step, total, preview)

    async def deliver(self, job: StoredJob, generation: Generation) -> None:
        if not is_preview(job.request):
            await self.inner.deliver(job, generation)

    async def report_failure(self, job: StoredJob, message: str) -> None:
        if is_preview(job.request):
            log.info("LoRA preview job %s did not finish: %s", job.id, message)
        else:
            await self.inner.report_failure(job, message)
