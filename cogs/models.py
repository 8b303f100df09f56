"""`/model list|default` and `/style add|list|remove`: a server's checkpoint and prompt presets.

The models are the App's catalog (`App.catalog`); styles and a server's default model are its
guild settings (`App.guild`). Listing is for everyone; changing is for admins, checked in
`interaction_check`.
"""

from __future__ import annotations

from collections.abc import Iterable

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Style, style_names
from cogs.checks import actor_of, is_admin
from cogs.client import DreamcordClient
from cogs.errors import Refused
from cogs.fitting import EMBED_DESCRIPTION, EMBED_FIELDS, fit_embed, fit_lines
from cogs.options import filter_names

Interaction = discord.Interaction[DreamcordClient]

ADMIN_VERBS = {"default", "add", "remove"}


async def _require_admin(interaction: Interaction) -> bool:
    """Changing verbs need an admin; `default_permissions` cannot be set per subcommand."""
    command = interaction.command
    if command is not None and command.name in ADMIN_VERBS:
        if interaction.guild_id is None:
            raise Refused("this is a server setting: use the command in a server")
        if not is_admin(interaction):
            raise Refused("only server admins (Manage Server) can change this")
    return True


def styles_embed(styles: Iterable[Style]) -> discord.Embed:
    """`/style list`: one field per style (25 at most), in name order."""
    embed = discord.Embed(title="Styles", colour=discord.Colour.blurple())
    for style in sorted(styles, key=lambda style: style.name.lower())[:EMBED_FIELDS]:
        embed.add_field(name=style.name, value=style.describe(), inline=False)
    if not embed.fields:
        embed.description = "No styles yet: an admin adds one with /style add."
    return fit_embed(embed)


class Models(commands.GroupCog, group_name="model", group_description="Models this bot can use"):
    """The configured checkpoints and this server's default."""

    def __init__(self, bot: DreamcordClient) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: Interaction) -> bool:  # type: ignore[override]
        return await _require_admin(interaction)

    @app_commands.command(name="list", description="Show the models and this server's default")
    async def list_models(self, interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        catalog = interaction.client.app.catalog
        chosen = await catalog.server_default(interaction.guild_id) or catalog.configured
        lines = []
        for model in catalog.models:
            marks = []
            if model.name == catalog.configured:
                marks.append("bot default (MODEL)")
            if model.name == chosen:
                marks.append("⭐ used here")
            if model.refusal is not None:
                marks.append("not for /imagine yet")
            suffix = f" — {', '.join(marks)}" if marks else ""
            lines.append(f"`{model.name}` · {model.description}{suffix}")
        embed = discord.Embed(title="Models", colour=discord.Colour.blurple())
        embed.description = fit_lines(lines, EMBED_DESCRIPTION) or "No models are configured."
        embed.set_footer(text="/imagine model: picks one per request · admins: /model default")
        await interaction.edit_original_response(embed=fit_embed(embed))

    @app_commands.command(name="default", description="Set this server's default model (admins)")
    @app_commands.describe(name="a model from /model list, or 'default' for the bot's own")
    async def set_default(self, interaction: Interaction, name: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        catalog = interaction.client.app.catalog
        chosen = await catalog.set_server_default(actor_of(interaction), name)
        shown = f"`{chosen}`" if chosen else f"the bot's default, `{catalog.configured}`"
        await interaction.edit_original_response(
            content=f"This server now uses {shown} unless a request picks another model."
        )

    @set_default.autocomplete("name")
    async def _model_names(
        self, interaction: Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        return filter_names(interaction.client.app.catalog.names, typed)


class Styles(commands.GroupCog, group_name="style", group_description="Prompt style presets"):
    """A server's named styles: a template around the prompt, a negative, LoRAs, size, steps."""

    def __init__(self, bot: DreamcordClient) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: Interaction) -> bool:  # type: ignore[override]
        return await _require_admin(interaction)

    @app_commands.command(name="add", description="Add or replace a style (admins)")
    @app_commands.describe(
        name="the style's name, for example anime",
        template="the prompt around the user's, with {prompt} where it goes",
        negative="added to the user's negative prompt",
        loras="LoRAs to add, as name:weight, name2:0.5",
        size="default size, WxH or a ratio such as 2:3",
        steps="default sampling steps",
    )
    async def add(
        self,
        interaction: Interaction,
        name: app_commands.Range[str, 1, 32],
        template: app_commands.Range[str, 1, 1000],
        negative: app_commands.Range[str, 0, 1000] = "",
        loras: app_commands.Range[str, 0, 500] | None = None,
        size: str | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        app = interaction.client.app
        style, replaced = await app.guild.add_style(
            actor_of(interaction),
            name=name,
            template=template,
            negative=negative,
            loras=loras,
            size=size,
            steps=steps,
            known_loras=app.requests.names.loras,
        )
        verb = "Replaced" if replaced else "Added"
        await interaction.edit_original_response(
            content=f"{verb} style `{style.name}`: {style.describe()}\n"
            f"Use it with /imagine style:{style.name}",
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(name="list", description="Show this server's styles")
    async def list_styles(self, interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild = await interaction.client.app.guild.settings(interaction.guild_id)
        await interaction.edit_original_response(
            embed=styles_embed(guild.styles.values()),
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(name="remove", description="Remove a style (admins)")
    @app_commands.describe(name="the style to remove")
    async def remove(self, interaction: Interaction, name: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        style = await interaction.client.app.guild.remove_style(actor_of(interaction), name)
        await interaction.edit_original_response(content=f"Removed style `{style.name}`.")

    @remove.autocomplete("name")
    async def _style_names(
        self, interaction: Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        guild = await interaction.client.app.guild.settings(interaction.guild_id)
        return filter_names(style_names(guild.styles), typed)
