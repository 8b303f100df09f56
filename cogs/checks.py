"""Who may do what, and how a user-fixable problem is answered: in one place for every cog."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import discord

from bot.policy import Place

if TYPE_CHECKING:
    from bot.settings import Settings


def place_of(interaction: discord.Interaction, settings: Settings) -> Place:
    """The facts policy checks need, taken from the interaction."""
    channel = interaction.channel
    nsfw = bool(getattr(channel, "nsfw", False)) or isinstance(channel, discord.DMChannel)
    return Place(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        channel_is_nsfw=nsfw,
        user_id=interaction.user.id,
        is_admin=is_admin(interaction, settings),
    )


def is_admin(interaction: discord.Interaction, settings: Settings) -> bool:
    """Manage Server, the configured admin role, or an owner id from the settings.

    Checked in code: `default_permissions` is only a default that server admins can change.
    """
    if interaction.user.id in settings.owner_ids:
        return True
    member = interaction.user
    if not isinstance(member, discord.Member):
        return False
    if member.guild_permissions.manage_guild:
        return True
    return settings.admin_role is not None and any(
        role.name == settings.admin_role for role in member.roles
    )


async def reply_error(
    interaction: discord.Interaction, message: str, *, replace_thinking: bool = False
) -> None:
    """Answer a mistake the user can fix, visible only to them.

    After a public defer the "thinking" message is removed first, so the channel sees nothing.
    """
    text = f"⚠️ {message}"
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True)
        return
    if replace_thinking:
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=True)
