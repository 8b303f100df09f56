"""Who may do what, in one place for every cog: admins, and the facts policy checks need."""

from __future__ import annotations

import discord

from bot.app import Actor, Place
from cogs.client import DreamcordClient


def place_of(interaction: discord.Interaction[DreamcordClient]) -> Place:
    """The facts policy checks need, taken from the interaction."""
    channel = interaction.channel
    nsfw = bool(getattr(channel, "nsfw", False)) or isinstance(channel, discord.DMChannel)
    return Place(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        channel_is_nsfw=nsfw,
        user_id=interaction.user.id,
        is_admin=is_admin(interaction),
    )


def actor_of(interaction: discord.Interaction) -> Actor:
    """Who makes a change, for the audit log."""
    return Actor(guild_id=interaction.guild_id, user_id=interaction.user.id)


def is_admin(interaction: discord.Interaction[DreamcordClient]) -> bool:
    """Manage Server, the configured admin role, or an owner id from the settings.

    Checked in code: `default_permissions` is only a default that server admins can change.
    """
    settings = interaction.client.app.settings
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
