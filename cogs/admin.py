"""`/policy show|set|reset`: a server's rules, for its admins. Every change is audited.

The rules are fields of the guild's settings (`GuildSettings`: channels, NSFW words, limits,
cooldown, the server's default negative prompt, what the safety checker's flagged images get
outside NSFW channels, and the tiled upscale buttons' steps, denoise and tile), checked for every
job by the job service and every post of a result.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import SAFETY_DEFAULT, GuildSettings
from cogs.checks import actor_of, is_admin
from cogs.client import DreamcordClient
from cogs.errors import Refused
from cogs.fitting import FIELD_VALUE, fit, fit_embed, fit_escaped

Interaction = discord.Interaction[DreamcordClient]

RULE_OPTIONS = {
    "channels": "channels",
    "nsfw_words": "nsfw_words",
    "max_steps": "max_steps",
    "max_size": "max_pixels",
    "max_count": "max_count",
    "cooldown": "cooldown_s",
    "default_negative": "negative",
    "safety": "safety",
    "upscale_steps": "upscale_steps",
    "upscale_subtle": "upscale_subtle",
    "upscale_creative": "upscale_creative",
    "upscale_tile": "upscale_tile",
    "training": "training",
    "training_roles": "training_roles",
    "training_max_steps": "training_max_steps",
}
"""Option names admins see, and the `GuildSettings` field each one sets."""


def describe_policy(policy: GuildSettings) -> list[tuple[str, str]]:
    """(option name, what it is set to) for every rule, for `/policy show`."""
    channels, words, pixels = policy.channels, policy.nsfw_words, policy.max_pixels
    negative, upscale = policy.negative, policy.tiled_upscale()
    return [
        ("channels", fit(", ".join(f"<#{c}>" for c in channels), FIELD_VALUE) or "all channels"),
        ("nsfw_words", fit_escaped(", ".join(words), FIELD_VALUE) if words else "none"),
        ("max_steps", str(policy.max_steps or "bot limit")),
        ("max_size", f"{pixels:,} pixels" if pixels else "bot limit"),
        ("max_count", str(policy.max_count or "bot limit")),
        ("cooldown", f"{policy.cooldown_s} s" if policy.cooldown_s else "none"),
        ("default_negative", fit_escaped(negative, FIELD_VALUE) if negative else "none"),
        ("safety", policy.safety or "bot default (SAFETY_CHECKER)"),
        ("upscale_steps", str(upscale.steps)),
        ("upscale_subtle", f"denoise {upscale.subtle:g}"),
        ("upscale_creative", f"denoise {upscale.creative:g}"),
        ("upscale_tile", f"{upscale.tile} px"),
        ("training", policy.training or "on"),
        (
            "training_roles",
            ", ".join(f"<@&{role}>" for role in policy.training_roles) or "admins only",
        ),
        ("training_max_steps", str(policy.training_max_steps or "bot limit")),
    ]


class Admin(commands.Cog):
    """Server policy for admins (Manage Server, the admin role, or a bot owner)."""

    policy = app_commands.Group(
        name="policy",
        description="Server rules for Dreamcord (admins)",
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
    )

    def __init__(self, bot: DreamcordClient) -> None:
        self.bot = bot

    async def interaction_check(  # type: ignore[override]
        self, interaction: Interaction
    ) -> bool:
        """`default_permissions` is only a default server admins can change: check in code."""
        if interaction.guild_id is None:
            raise Refused("server rules are set in a server, not in DMs")
        if not is_admin(interaction):
            raise Refused("only server admins (Manage Server) can see or change the rules")
        return True

    @policy.command(name="show", description="Show this server's rules")
    async def show_rules(self, interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        current = await interaction.client.app.guild.settings(interaction.guild_id)
        await interaction.followup.send(embed=policy_embed("Server rules", current))

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
        safety="what images the safety checker flags get outside NSFW channels",
        upscale_steps="steps of the Upscale 2x Subtle / Creative / 4x buttons (default 20)",
        upscale_subtle="denoise of Upscale Subtle and 4x: more than 0, up to 1 (default 0.25)",
        upscale_creative="denoise of Upscale Creative: more than 0, up to 1 (default 0.45)",
        upscale_tile="tile side of tiled upscales: a multiple of 64, 256 to 1024 (default 512)",
        training="on, or paused: this server's LoRA training runs wait between their steps",
        add_training_role="let members of this role train LoRAs (/lora train)",
        remove_training_role="take this role off the roles that may train",
        training_max_steps="most steps of one training run here (the bot's TRAINING_MAX_STEPS)",
    )
    @app_commands.choices(
        safety=[
            app_commands.Choice(name="spoiler: sent blurred as a Discord spoiler", value="spoiler"),
            app_commands.Choice(name="block: left out, with a note", value="block"),
            app_commands.Choice(name="off: sent as they are", value="off"),
            app_commands.Choice(name="default: the bot's SAFETY_CHECKER", value=SAFETY_DEFAULT),
        ],
        training=[
            app_commands.Choice(name="on: training runs between image jobs", value="on"),
            app_commands.Choice(name="paused: runs wait between steps", value="paused"),
        ],
    )
    async def set_rules(
        self,
        interaction: Interaction,
        add_channel: discord.TextChannel | None = None,
        remove_channel: discord.TextChannel | None = None,
        nsfw_words: app_commands.Range[str, 0, 4000] | None = None,
        max_steps: app_commands.Range[int, 1, 150] | None = None,
        max_size: str | None = None,
        max_count: app_commands.Range[int, 1, 16] | None = None,
        cooldown: app_commands.Range[int, 0, 3600] | None = None,
        default_negative: app_commands.Range[str, 0, 6000] | None = None,
        safety: app_commands.Choice[str] | None = None,
        upscale_steps: app_commands.Range[int, 1, 150] | None = None,
        upscale_subtle: app_commands.Range[float, 0.01, 1.0] | None = None,
        upscale_creative: app_commands.Range[float, 0.01, 1.0] | None = None,
        upscale_tile: app_commands.Range[int, 256, 1024] | None = None,
        training: app_commands.Choice[str] | None = None,
        add_training_role: discord.Role | None = None,
        remove_training_role: discord.Role | None = None,
        training_max_steps: app_commands.Range[int, 1, 50_000] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        updated = await interaction.client.app.guild.set_policy(
            actor_of(interaction),
            "policy.set",
            add_channel=add_channel.id if add_channel else None,
            remove_channel=remove_channel.id if remove_channel else None,
            nsfw_words=nsfw_words,
            max_steps=max_steps,
            max_size=max_size,
            max_count=max_count,
            cooldown=cooldown,
            default_negative=default_negative,
            safety=safety.value if safety else None,
            upscale_steps=upscale_steps,
            upscale_subtle=upscale_subtle,
            upscale_creative=upscale_creative,
            upscale_tile=upscale_tile,
            training=training.value if training else None,
            add_training_role=add_training_role.id if add_training_role else None,
            remove_training_role=remove_training_role.id if remove_training_role else None,
            training_max_steps=training_max_steps,
        )
        if training is not None and interaction.guild_id is not None:
            await interaction.client.app.training.apply_switch(interaction.guild_id)
        await interaction.followup.send(embed=policy_embed("Server rules, saved", updated))

    @policy.command(name="reset", description="Put one rule, or all, back to the default")
    @app_commands.describe(rule="which rule to reset")
    @app_commands.choices(
        rule=[app_commands.Choice(name="all", value="all")]
        + [app_commands.Choice(name=name, value=name) for name in RULE_OPTIONS]
    )
    async def reset_rule(self, interaction: Interaction, rule: app_commands.Choice[str]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        names = list(RULE_OPTIONS) if rule.value == "all" else [rule.value]
        fields = tuple(RULE_OPTIONS[name] for name in names)
        updated = await interaction.client.app.guild.reset_rules(actor_of(interaction), fields)
        if "training" in fields and interaction.guild_id is not None:
            await interaction.client.app.training.apply_switch(interaction.guild_id)
        await interaction.followup.send(embed=policy_embed("Server rules, saved", updated))


def policy_embed(title: str, policy: GuildSettings) -> discord.Embed:
    embed = discord.Embed(title=title, colour=discord.Colour.orange())
    for name, value in describe_policy(policy):
        embed.add_field(name=name, value=value or "none", inline=False)
    return fit_embed(embed)
