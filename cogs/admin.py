"""`/policy show|set|reset`: a server's rules, for its admins. Every change is audited.

The rules live in the guild's settings (keys of `bot.policy.POLICY_KEYS`, plus `negative`, the
server's default negative prompt) and are checked for every job by `bot.policy.Policy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs.checks import is_admin
from cogs.errors import Refused
from pipeline.errors import UserError
from pipeline.sizes import parse_size

if TYPE_CHECKING:
    from bot.discord_bot import DreamcordBot

SETTING_KEYS = {
    "channels": "channels",
    "nsfw_words": "nsfw_words",
    "max_steps": "max_steps",
    "max_size": "max_pixels",
    "max_count": "max_count",
    "cooldown": "cooldown_s",
    "default_negative": "negative",
}
"""Option names admins see, and the guild-settings key each one is stored under."""
CLEARING_WORDS = {"", "none", "off", "-"}
MAX_NSFW_WORDS = 200


def parse_words(text: str) -> list[str] | None:
    """A comma-separated word list, lower-cased and de-duplicated; None clears it."""
    if text.strip().lower() in CLEARING_WORDS:
        return None
    words: list[str] = []
    for word in text.split(","):
        word = " ".join(word.split()).lower()
        if word and word not in words:
            words.append(word)
    if len(words) > MAX_NSFW_WORDS:
        raise UserError(f"that is {len(words)} words; keep the list to {MAX_NSFW_WORDS}")
    return words or None


def policy_changes(
    current: Mapping[str, Any],
    *,
    add_channel: int | None = None,
    remove_channel: int | None = None,
    nsfw_words: str | None = None,
    max_steps: int | None = None,
    max_size: str | None = None,
    max_count: int | None = None,
    cooldown: int | None = None,
    default_negative: str | None = None,
    max_pixels_limit: int,
) -> dict[str, Any]:
    """The guild-settings keys to write for these options (None values remove a key)."""
    changes: dict[str, Any] = {}
    channels = list(current.get("channels") or [])
    if add_channel is not None and add_channel not in channels:
        channels.append(add_channel)
    if remove_channel is not None and remove_channel in channels:
        channels.remove(remove_channel)
    if add_channel is not None or remove_channel is not None:
        changes["channels"] = channels or None
    if nsfw_words is not None:
        changes["nsfw_words"] = parse_words(nsfw_words)
    if max_steps is not None:
        changes["max_steps"] = max_steps
    if max_size is not None:
        width, height = parse_size(max_size, max_pixels_limit)
        changes["max_pixels"] = width * height
    if max_count is not None:
        changes["max_count"] = max_count
    if cooldown is not None:
        changes["cooldown_s"] = cooldown or None
    if default_negative is not None:
        text = default_negative.strip()
        changes["negative"] = None if text.lower() in CLEARING_WORDS else text
    return changes


def describe_policy(policy: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(option name, what it is set to) for every rule, for `/policy show`."""
    channels = policy.get("channels") or []
    words = policy.get("nsfw_words") or []
    pixels = policy.get("max_pixels")
    negative = policy.get("negative")
    return [
        ("channels", ", ".join(f"<#{c}>" for c in channels) if channels else "all channels"),
        ("nsfw_words", ", ".join(words)[:1000] if words else "none"),
        ("max_steps", str(policy.get("max_steps") or "bot limit")),
        ("max_size", f"{pixels:,} pixels" if pixels else "bot limit"),
        ("max_count", str(policy.get("max_count") or "bot limit")),
        ("cooldown", f"{policy['cooldown_s']} s" if policy.get("cooldown_s") else "none"),
        ("default_negative", negative[:1000] if negative else "none"),
    ]


class Admin(commands.Cog):
    """Server policy for admins (Manage Server, the admin role, or a bot owner)."""

    policy = app_commands.Group(
        name="policy",
        description="Server rules for Dreamcord (admins)",
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
    )

    def __init__(self, bot: DreamcordBot) -> None:
        self.bot = bot

    async def interaction_check(  # type: ignore[override]
        self, interaction: discord.Interaction[DreamcordBot]
    ) -> bool:
        """`default_permissions` is only a default server admins can change: check in code."""
        if interaction.guild_id is None:
            raise Refused("server rules are set in a server, not in DMs")
        if not is_admin(interaction, self.bot.settings):
            raise Refused("only server admins (Manage Server) can see or change the rules")
        return True

    @policy.command(name="show", description="Show this server's rules")
    async def show_rules(self, interaction: discord.Interaction[DreamcordBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        current = await self.bot.service.repos.settings.guild(interaction.guild_id)
        await interaction.followup.send(embed=_policy_embed("Server rules", current))

    @policy.command(name="set", description="Change this server's rules")
    @app_commands.describe(
        add_channel="allow the bot in this channel (once any is listed, only listed ones)",
        remove_channel="take this channel off the allowed list",
        nsfw_words="comma-separated words refused outside NSFW channels ('none' clears)",
        max_steps="most sampling steps per request",
        max_size="largest size, WxH such as 768x768",
        max_count="most images per request",
        cooldown="seconds between one user's requests (0: none)",
        default_negative="negative prompt used when a user gives none ('none' clears)",
    )
    async def set_rules(
        self,
        interaction: discord.Interaction[DreamcordBot],
        add_channel: discord.TextChannel | None = None,
        remove_channel: discord.TextChannel | None = None,
        nsfw_words: app_commands.Range[str, 0, 4000] | None = None,
        max_steps: app_commands.Range[int, 1, 150] | None = None,
        max_size: str | None = None,
        max_count: app_commands.Range[int, 1, 16] | None = None,
        cooldown: app_commands.Range[int, 0, 3600] | None = None,
        default_negative: app_commands.Range[str, 0, 6000] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        repos = self.bot.service.repos
        current = await repos.settings.guild(interaction.guild_id)
        changes = policy_changes(
            current,
            add_channel=add_channel.id if add_channel else None,
            remove_channel=remove_channel.id if remove_channel else None,
            nsfw_words=nsfw_words,
            max_steps=max_steps,
            max_size=max_size,
            max_count=max_count,
            cooldown=cooldown,
            default_negative=default_negative,
            max_pixels_limit=self.bot.settings.max_pixels,
        )
        if not changes:
            raise UserError("give at least one option to change, or use /policy show")
        await self._apply(interaction, current, changes, "policy.set")

    @policy.command(name="reset", description="Put one rule, or all, back to the default")
    @app_commands.describe(rule="which rule to reset")
    @app_commands.choices(
        rule=[app_commands.Choice(name="all", value="all")]
        + [app_commands.Choice(name=name, value=name) for name in SETTING_KEYS]
    )
    async def reset_rule(
        self, interaction: discord.Interaction[DreamcordBot], rule: app_commands.Choice[str]
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        current = await self.bot.service.repos.settings.guild(interaction.guild_id)
        names = list(SETTING_KEYS) if rule.value == "all" else [rule.value]
        changes = {SETTING_KEYS[name]: None for name in names}
        await self._apply(interaction, current, changes, "policy.reset")

    async def _apply(
        self,
        interaction: discord.Interaction[DreamcordBot],
        current: Mapping[str, Any],
        changes: Mapping[str, Any],
        action: str,
    ) -> None:
        assert interaction.guild_id is not None
        repos = self.bot.service.repos
        await repos.settings.set_guild(interaction.guild_id, changes)
        for key, value in changes.items():
            if current.get(key) != value:
                await repos.audit.record(
                    action,
                    guild_id=interaction.guild_id,
                    user_id=interaction.user.id,
                    target=key,
                    detail={"from": current.get(key), "to": value},
                )
        updated = await repos.settings.guild(interaction.guild_id)
        await interaction.followup.send(embed=_policy_embed("Server rules, saved", updated))


def _policy_embed(title: str, policy: Mapping[str, Any]) -> discord.Embed:
    embed = discord.Embed(title=title, colour=discord.Colour.orange())
    for name, value in describe_policy(policy):
        embed.add_field(name=name, value=value or "none", inline=False)
    return embed
