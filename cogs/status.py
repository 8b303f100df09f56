"""A job's status message: queued with its place and wait, a Cancel button, then the presenter.

`/imagine` and every button that starts a job end in `queue_job`; Cancel works after restarts
(a `DynamicItem` with id `dc:c:<job id>`).
"""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.app import Origin
from cogs import texts
from cogs.checks import ServedItem, here_is_nsfw, is_admin, place_of
from cogs.client import DreamcordClient
from cogs.errors import answered_in_public, guarded
from pipeline.request import GenerationRequest


def origin_of(interaction: discord.Interaction) -> Origin:
    """Who asked and where the answer goes, kept with the job for delivery after restarts."""
    return Origin(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        interaction_id=interaction.id,
        interaction_token=interaction.token,
        channel_nsfw=here_is_nsfw(interaction),
    )


async def queue_job(
    interaction: discord.Interaction[DreamcordClient], request: GenerationRequest
) -> None:
    """Submit `request` for the user and turn the deferred reply into the job's status."""
    app = interaction.client.app
    ticket = await app.jobs.submit(request, origin_of(interaction), place=place_of(interaction))
    message = await interaction.edit_original_response(
        content=texts.queued(request, interaction.user.id, ticket.position, ticket.eta_s),
        view=cancel_view(ticket.job_id),
        allowed_mentions=discord.AllowedMentions.none(),
    )
    answered_in_public(interaction)
    interaction.client.presenter.track(
        ticket.job_id, message.channel.id, message.id, interaction.filesize_limit
    )
    await app.jobs.attach_status(ticket.job_id, message.id)


class CancelButton(
    ServedItem,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"dc:c:(?P<job>[0-9a-f]{32})",
):
    """Cancel a queued or running job (its requester or an admin)."""

    def __init__(self, job_id: str, label: str = "Cancel") -> None:
        super().__init__(
            discord.ui.Button(
                label=label, style=discord.ButtonStyle.danger, custom_id=f"dc:c:{job_id}"
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(  # type: ignore[override]  # discord.py hands over the Button
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> CancelButton:
        return cls(match["job"], item.label or "Cancel")

    async def callback(self, interaction: discord.Interaction[DreamcordClient]) -> None:  # type: ignore[override]
        await guarded(interaction, self._cancel(interaction))

    async def _cancel(self, interaction: discord.Interaction[DreamcordClient]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        jobs = interaction.client.app.jobs
        outcome = await jobs.cancel(self.job_id, interaction.user.id, is_admin(interaction))
        await interaction.followup.send(f"Cancelled: {outcome}.", ephemeral=True)


def cancel_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
