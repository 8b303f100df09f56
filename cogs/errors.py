"""The one answer path for errors: no user ever sees a traceback or "This interaction failed".

Cogs, buttons and modals raise; the edges (the command tree's error handler, `guarded` for
buttons, a modal's `on_error`) call `answer_error`. User-fixable problems (`UserError`,
`Refused`) are answered with their message, ephemerally: after a public "thinking" defer
(`think_in_public`) that message is removed first, so the channel sees nothing. Anything else
is a bug: logged with the interaction's context, answered with a short apology.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Mapping

import discord
from discord import app_commands

from cogs.fitting import MESSAGE, fit
from pipeline.errors import UserError

log = logging.getLogger(__name__)

SOMETHING_WENT_WRONG = "❌ Something went wrong; it has been logged. Please try again later."
PUBLIC_THINKING = "dreamcord.public_thinking"
"""The `Interaction.extras` key set while a public "thinking" message stands in for an answer."""


class Refused(app_commands.CheckFailure):
    """An app-command check said no; the message tells the user why and what to do."""


def describe(interaction: discord.Interaction) -> str:
    """Who did what where, for the log line of an unexpected error."""
    data: Mapping[str, object] = interaction.data or {}
    what = data.get("custom_id") or data.get("name") or f"type {interaction.type}"
    return (
        f"interaction {interaction.id} ({what}) by user {interaction.user.id} "
        f"in guild {interaction.guild_id} channel {interaction.channel_id}"
    )


async def answer(interaction: discord.Interaction, text: str) -> None:
    """Say `text` ephemerally, whether or not the interaction was answered yet.

    Cut to one message: a refusal that lists every mistake of a long prompt must still arrive.
    """
    text = fit(text, MESSAGE)
    with contextlib.suppress(discord.HTTPException):
        if interaction.response.is_done():
            await interaction.followup.send(
                text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
            )
        else:
            await interaction.response.send_message(
                text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
            )


async def think_in_public(interaction: discord.Interaction) -> None:
    """Defer with a public "thinking" message, which a user error later replaces."""
    await interaction.response.defer(thinking=True)
    interaction.extras[PUBLIC_THINKING] = True


def answered_in_public(interaction: discord.Interaction) -> None:
    """The public message is a real answer now: an error must not remove it."""
    interaction.extras.pop(PUBLIC_THINKING, None)


async def answer_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Answer any error raised while handling `interaction` (see the module docstring)."""
    original = getattr(error, "original", error)
    if isinstance(original, UserError | Refused):
        if interaction.extras.pop(PUBLIC_THINKING, False):
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
        await answer(interaction, f"⚠️ {original}")
        return
    if isinstance(original, app_commands.CheckFailure):
        await answer(interaction, "⚠️ You cannot use this command here.")
        return
    log.error("unexpected error in %s", describe(interaction), exc_info=original)
    await answer(interaction, SOMETHING_WENT_WRONG)


async def guarded(interaction: discord.Interaction, handler: Awaitable[None]) -> None:
    """Run a button or modal handler; turn whatever it raises into an answer."""
    try:
        await handler
    except Exception as error:
        await answer_error(interaction, error)
