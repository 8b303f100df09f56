"""Who may do what, in one place for every cog: which servers are served, the two kinds of
admin, and the facts that policy and the gallery check.

A deployment has one LoRA, embedding and hypernetwork library and one set of models, shared by
every server it is in. So administering those (library admins) is for the bot's owners: an id in
OWNER_IDS, or the admin role (ADMIN_ROLE_ID) of the home server (HOME_GUILD_ID), matched by id.
A server's own rules (policy, styles, its default model) are for that server's admins (Manage
Server) as well. Both are checked in code: `default_permissions` is only a default that server
admins can change.
"""

from __future__ import annotations

from typing import Any

import discord

from bot.app import Actor, Place, Settings, Viewer
from cogs.client import DreamcordClient
from cogs.errors import answer

Interaction = discord.Interaction[DreamcordClient]

NOT_SERVED = (
    "Sorry, this Dreamcord bot serves only the servers its owner set it up for, and this is not "
    "one of them. Ask your server's admins to run their own: it is free and self-hosted."
)


def is_served(interaction: discord.Interaction[Any]) -> bool:
    """Whether this interaction's server is one DISCORD_GUILDS names (all when it is empty)."""
    return _settings(interaction).serves_guild(interaction.guild_id)


class DreamcordTree(discord.app_commands.CommandTree[DreamcordClient]):
    """The command tree, refusing every command and autocomplete from a server not served."""

    async def interaction_check(self, interaction: Interaction, /) -> bool:
        if is_served(interaction):
            return True
        if interaction.type is discord.InteractionType.application_command:
            await answer(interaction, f"⚠️ {NOT_SERVED}")
        return False


class ServedItem:
    """Mix into every persistent button (before `DynamicItem`): the same refusal for clicks."""

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if is_served(interaction):
            return True
        await answer(interaction, f"⚠️ {NOT_SERVED}")
        return False


def channel_is_nsfw(channel: object, dm_policy: str) -> bool:
    """An age-restricted channel (a thread: its parent's flag), or a DM when DM_POLICY=nsfw.

    A channel discord.py does not know the flag of counts as SFW, the safe side.
    """
    # By type, not class: a DM discord.py has not cached is a PartialMessageable.
    if getattr(channel, "type", None) in (discord.ChannelType.private, discord.ChannelType.group):
        return dm_policy == "nsfw"
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else bool(getattr(channel, "nsfw", False))


def here_is_nsfw(interaction: discord.Interaction[Any]) -> bool:
    return channel_is_nsfw(interaction.channel, _settings(interaction).dm_policy)


def place_of(interaction: Interaction) -> Place:
    """The facts policy checks need, taken from the interaction."""
    return Place(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        channel_is_nsfw=here_is_nsfw(interaction),
        user_id=interaction.user.id,
        is_admin=is_admin(interaction),
    )


def viewer_of(interaction: discord.Interaction[Any]) -> Viewer:
    """Who wants to see or post a stored generation, and where (for `App.gallery`)."""
    return Viewer(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_is_nsfw=here_is_nsfw(interaction),
    )


def actor_of(interaction: discord.Interaction) -> Actor:
    """Who makes a change, for the audit log."""
    return Actor(guild_id=interaction.guild_id, user_id=interaction.user.id)


def is_library_admin(interaction: discord.Interaction[Any]) -> bool:
    """An owner id, or the home server's admin role (Manage Server there when no role is set)."""
    settings = _settings(interaction)
    if interaction.user.id in settings.owner_ids:
        return True
    member = interaction.user
    home = settings.home_guild
    if home is None or interaction.guild_id != home or not isinstance(member, discord.Member):
        return False
    if settings.admin_role_id is not None:
        return any(role.id == settings.admin_role_id for role in member.roles)
    return member.guild_permissions.manage_guild


def is_admin(interaction: discord.Interaction[Any]) -> bool:
    """An admin of this server (Manage Server here), or a library admin: a server's rules."""
    if is_library_admin(interaction):
        return True
    member = interaction.user
    return isinstance(member, discord.Member) and member.guild_permissions.manage_guild


def _settings(interaction: discord.Interaction[Any]) -> Settings:
    client: DreamcordClient = interaction.client
    return client.app.settings
