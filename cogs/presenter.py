"""Shows jobs in Discord: coalesced progress edits, the result grid, failures.

Implements the job service's `Delivery`. Edits go through the interaction's webhook while its
15-minute token lives; after that, the result is posted as a new bot message in the channel that
mentions the requester. What the safety checker flagged is spoilered or left out, as
`App.safety` screens it for the channel. Progress edits are fire-and-forget tasks (latest state
wins, at most one edit per `EDIT_INTERVAL_S` per message), so a slow or rate-limited Discord never
holds up the GPU.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import discord
from PIL import Image

from cogs import texts
from cogs.buttons import result_view
from cogs.grid import Encoded, compose_grid, encode_for_upload

if TYPE_CHECKING:
    from bot.app import Generation, Screening, StoredJob
    from cogs.client import DreamcordClient

log = logging.getLogger(__name__)

EDIT_INTERVAL_S = 2.5
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
PREVIEW_WIDTH = 256
TOKEN_GONE = (401, 404)
"""Statuses Discord answers once an interaction token has expired (50027, 10015)."""


@dataclass
class _Status:
    """Where a job's status message is, and how its progress edits are going."""

    channel_id: int | None
    message_id: int | None
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    last_edit: float = 0.0
    pending: tuple[int, int, Image.Image | None] | None = None
    editing: asyncio.Task[None] | None = None
    previews_allowed: bool | None = None
    """Asked of `App.safety` before the first progress edit."""


class DiscordPresenter:
    """The Discord side of delivery (see the module docstring)."""

    def __init__(self, bot: DreamcordClient, edit_interval_s: float = EDIT_INTERVAL_S) -> None:
        self.bot = bot
        self.edit_interval_s = edit_interval_s
        self._status: dict[str, _Status] = {}

    def track(self, job_id: str, channel_id: int, message_id: int, upload_limit: int) -> None:
        """Remember the status message the cog posted for a job."""
        status = self._status.setdefault(job_id, _Status(channel_id, message_id))
        status.channel_id, status.message_id, status.upload_limit = (
            channel_id,
            message_id,
            upload_limit,
        )

    # Delivery

    def progress(self, job: StoredJob, step: int, total: int, preview: Image.Image | None) -> None:
        status = self._status_of(job)
        status.pending = (step, total, preview or (status.pending or (0, 0, None))[2])
        if status.editing is None or status.editing.done():
            status.editing = asyncio.create_task(self._edit_progress(job, status))

    async def deliver(self, job: StoredJob, generation: Generation) -> None:
        status = self._status.pop(job.id, None) or self._status_of(job)
        if status.editing is not None:
            status.editing.cancel()
        screening = await self.bot.app.safety.screen(
            generation.images, generation.guild_id, generation.channel_nsfw
        )
        grid = await asyncio.to_thread(self.grid_file, generation, status.upload_limit, screening)
        content = texts.finished(
            generation.request, job.user_id, [i.seed for i in generation.images]
        )
        content += notes_text(screening, grid)
        view = result_view(generation)
        message_id = await self._edit_status(job, status, content, upload(grid), view)
        if message_id is None:
            message_id = await self._post_in_channel(job, content, grid, view)
        await self.bot.app.gallery.set_message(generation.id, message_id)

    async def report_failure(self, job: StoredJob, message: str) -> None:
        status = self._status.pop(job.id, None) or self._status_of(job)
        if status.editing is not None:
            status.editing.cancel()
        content = texts.failed(job.request, job.user_id, message)
        if await self._edit_status(job, status, content, [], None) is None and job.channel_id:
            channel = self.bot.get_partial_messageable(job.channel_id)
            await channel.send(
                texts.failed_in_channel(job.user_id, content),
                allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)]),
            )

    # Internals

    def _status_of(self, job: StoredJob) -> _Status:
        return self._status.setdefault(job.id, _Status(job.channel_id, job.message_id))

    async def _edit_progress(self, job: StoredJob, status: _Status) -> None:
        """Edit the status message with the latest step, at most once per interval."""
        if status.previews_allowed is None:
            status.previews_allowed = await self.bot.app.safety.shows_as_is(
                job.guild_id, job.channel_nsfw
            )
        while status.pending is not None:
            wait = status.last_edit + self.edit_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            step, total, preview = status.pending
            status.pending = None
            status.last_edit = time.monotonic()
            files = []
            if preview is not None and status.previews_allowed:
                files.append(self._preview_file(preview))
            content = texts.running(job.request, job.user_id, step, total)
            await self._edit_status(job, status, content, files, None, keep_view=True)

    async def _edit_status(
        self,
        job: StoredJob,
        status: _Status,
        content: str,
        files: list[discord.File],
        view: discord.ui.View | None,
        keep_view: bool = False,
    ) -> int | None:
        """Edit the status message through the interaction webhook; None if that is gone."""
        if not job.interaction_token or status.message_id is None:
            return None
        webhook = discord.Webhook.partial(
            self.bot.application_id or 0, job.interaction_token, client=self.bot
        )
        extra: dict[str, Any] = {} if keep_view else {"view": view}
        try:
            await webhook.edit_message(
                status.message_id,
                content=content,
                attachments=files,
                allowed_mentions=discord.AllowedMentions.none(),
                **extra,
            )
        except discord.HTTPException as error:
            self.bot.app.jobs.metrics.discord_errors[str(error.code or error.status)] += 1
            if error.status in TOKEN_GONE:
                return None
            log.warning("could not edit the message of job %s: %s", job.id, error)
            return None if not keep_view else status.message_id
        return status.message_id

    async def _post_in_channel(
        self, job: StoredJob, content: str, grid: Encoded | None, view: discord.ui.View
    ) -> int:
        """The token is gone: post the result anew, mentioning the requester."""
        if job.channel_id is None:
            raise RuntimeError(f"job {job.id} has no channel to deliver to")
        channel = self.bot.get_partial_messageable(job.channel_id)
        message = await channel.send(
            texts.ready_in_channel(job.user_id, content),
            files=upload(grid),
            view=view,
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)]),
        )
        return message.id

    def grid_file(self, generation: Generation, limit: int, screening: Screening) -> Encoded | None:
        """The labelled grid of the images `screening` shows, encoded to fit `limit` (a JPEG
        says where the PNG is), named `SPOILER_...` when it says so; None when it shows none
        (blocking: use a thread)."""
        if not screening.shown:
            return None
        gallery = self.bot.app.gallery
        images = [
            Image.open(gallery.image_path(generation.images[index])).convert("RGB")
            for index in screening.shown
        ]
        numbers = [index + 1 for index in screening.shown]
        grid = compose_grid(images, numbers=numbers)
        encoded = encode_for_upload(grid, limit, stem=f"dreamcord-{generation.id}")
        if encoded.note is not None:
            encoded = replace(encoded, note=texts.png_kept(encoded.note, generation.id))
        if screening.spoiler:  # Discord blurs an attachment whose name starts so
            encoded = replace(encoded, filename=f"SPOILER_{encoded.filename}")
        return encoded

    @staticmethod
    def _preview_file(preview: Image.Image) -> discord.File:
        height = round(preview.height * PREVIEW_WIDTH / preview.width)
        image = preview.resize((PREVIEW_WIDTH, height), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return discord.File(io.BytesIO(buffer.getvalue()), "preview.png")


def upload(grid: Encoded | None) -> list[discord.File]:
    """The attachments of a result: its grid, or none when every image was withheld."""
    return [] if grid is None else [discord.File(io.BytesIO(grid.data), grid.filename)]


def notes_text(screening: Screening, grid: Encoded | None) -> str:
    """The small-print lines under a result: the safety checker's, then the encoding's."""
    notes = [screening.note, grid.note if grid else None]
    return "".join(f"\n-# {note}" for note in notes if note)
