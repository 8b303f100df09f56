"""`/model list|default` and `/style add|list|remove`: a server's checkpoint and prompt presets.

The models are what the settings configure (MODEL and every checkpoint in MODELS_DIR), read
once when the cog loads, as the engine does; a server's default model is its guild setting
"model". Styles are plain data in the guild settings (`bot.styles`). Listing is for everyone;
changing is for admins, checked in `interaction_check`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.models import model_sources
from bot.requests import prompt_limits
from bot.styles import (
    SETTINGS_KEY,
    apply_style,
    find_style,
    make_style,
    style_names,
    styles_of,
    with_style,
    without_style,
)
from cogs.checks import is_admin
from cogs.errors import Refused
from cogs.library import filter_names
from pipeline.errors import UserError
from pipeline.prompt.tags import extract_tags
from pipeline.request import LoraRef

if TYPE_CHECKING:
    from bot.discord_bot import DreamcordBot

log = logging.getLogger(__name__)

MODEL_KEY = "model"
"""The guild-settings key of a server's default model (read by `bot.requests`)."""
CLEARING_WORDS = {"default", "none", "reset", "-"}
ADMIN_VERBS = {"default", "add", "remove"}


@dataclass(frozen=True)
class Choices:
    """/imagine's text and layers after its `lora`, `model` and `style` options are applied."""

    prompt: str
    negative: str | None
    server: dict[str, Any]
    loras: tuple[LoraRef, ...]


async def apply_choices(
    bot: DreamcordBot,
    prompt: str,
    negative: str | None,
    explicit: dict[str, Any],
    user: Mapping[str, Any],
    server: Mapping[str, Any],
) -> Choices:
    """Pop "lora", "lora_weight" and "style" from `explicit` and apply them; check "model".

    The LoRA option is read as a `<lora:name:weight>` tag would be (same checks, same "did you
    mean"), its weight defaulting to the LoRA's own. A server default model that is no longer
    configured is ignored, so the bot's default is used.
    """
    server = dict(server)
    models = bot.get_cog("Models")
    if isinstance(models, Models):
        if explicit.get("model"):
            explicit["model"] = models.check(explicit["model"])
        if MODEL_KEY in server and models.server_default(server) is None:
            del server[MODEL_KEY]
    loras: tuple[LoraRef, ...] = ()
    name, weight = explicit.pop("lora", None), explicit.pop("lora_weight", None)
    if name:
        known = bot.names.loras
        if weight is None and name.strip().lower() in {known_name.lower() for known_name in known}:
            weight = (await bot.services.loras.info(name)).default_weight
        tag = f"<lora:{name.strip()}:{1.0 if weight is None else weight:g}>"
        scan = extract_tags(tag, known, prompt_limits(bot.settings))
        if scan.errors:
            raise UserError(scan.errors[0])
        loras = scan.loras
    style_name = explicit.pop("style", None)
    if not style_name:
        return Choices(prompt, negative, server, loras)
    styled = apply_style(
        find_style(server, style_name),
        prompt,
        negative,
        user=user,
        server=server,
        default_negative=bot.settings.default_negative,
        known_loras=bot.names.loras,
    )
    # The lora option wins over the style's own weight for the same LoRA.
    chosen = {ref.name.lower(): ref for ref in (*styled.loras, *loras)}
    return Choices(styled.prompt, styled.negative, styled.server, tuple(chosen.values()))


async def _require_admin(interaction: discord.Interaction[DreamcordBot]) -> bool:
    """Changing verbs need an admin; `default_permissions` cannot be set per subcommand."""
    command = interaction.command
    if command is not None and command.name in ADMIN_VERBS:
        if interaction.guild_id is None:
            raise Refused("this is a server setting: use the command in a server")
        if not is_admin(interaction, interaction.client.settings):
            raise Refused("only server admins (Manage Server) can change this")
    return True


class Models(commands.GroupCog, group_name="model", group_description="Models this bot can use"):
    """The configured checkpoints and this server's default."""

    def __init__(self, bot: DreamcordBot) -> None:
        self.bot = bot
        self.names: list[str] = []
        self.kinds: dict[str, str] = {}
        self.refusals: dict[str, str] = {}
        """Why a model cannot serve /imagine (inpainting checkpoints), by name."""
        self.configured = bot.settings.model
        super().__init__()

    async def cog_load(self) -> None:
        try:
            sources, default = await asyncio.to_thread(model_sources, self.bot.settings)
        except UserError as error:
            log.warning("could not list the configured models: %s", error)
            return
        self.names = list(sources)
        self.kinds = {name: source.description for name, source in sources.items()}
        self.refusals = {
            name: refusal
            for name, source in sources.items()
            if (refusal := source.txt2img_refusal) is not None
        }
        self.configured = default

    def known(self, name: str) -> str | None:
        """The configured model called `name` (any letter case), or None."""
        folded = name.strip().lower()
        return next((known for known in self.names if known.lower() == folded), None)

    def check(self, name: str) -> str:
        """`name` as configured and able to serve /imagine; a UserError saying why otherwise."""
        known = self.known(name)
        if known is None:
            raise UserError(f"there is no model {name!r}: use one of {', '.join(self.names)}")
        if known in self.refusals:
            raise UserError(self.refusals[known])
        return known

    def server_default(self, guild_settings: Mapping[str, Any]) -> str | None:
        """The server's default model, if it is still configured (else the .env one is used)."""
        chosen = guild_settings.get(MODEL_KEY)
        return self.known(chosen) if isinstance(chosen, str) else None

    async def interaction_check(  # type: ignore[override]
        self, interaction: discord.Interaction[DreamcordBot]
    ) -> bool:
        return await _require_admin(interaction)

    @app_commands.command(name="list", description="Show the models and this server's default")
    async def list_models(self, interaction: discord.Interaction[DreamcordBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild = await self._guild_settings(interaction)
        chosen = self.server_default(guild) or self.configured
        lines = []
        for name in self.names:
            marks = []
            if name == self.configured:
                marks.append("bot default (MODEL)")
            if name == chosen:
                marks.append("⭐ used here")
            if name in self.refusals:
                marks.append("not for /imagine yet")
            suffix = f" — {', '.join(marks)}" if marks else ""
            lines.append(f"`{name}` · {self.kinds.get(name, '?')}{suffix}")
        embed = discord.Embed(title="Models", colour=discord.Colour.blurple())
        embed.description = "\n".join(lines)[:4096] or "No models are configured."
        embed.set_footer(text="/imagine model: picks one per request · admins: /model default")
        await interaction.edit_original_response(embed=embed)

    @app_commands.command(name="default", description="Set this server's default model (admins)")
    @app_commands.describe(name="a model from /model list, or 'default' for the bot's own")
    async def set_default(self, interaction: discord.Interaction[DreamcordBot], name: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        repos = self.bot.service.repos
        current = await repos.settings.guild(interaction.guild_id)
        chosen = None if name.strip().lower() in CLEARING_WORDS else self.check(name)
        await repos.settings.set_guild(interaction.guild_id, {MODEL_KEY: chosen})
        await repos.audit.record(
            "model.default",
            guild_id=interaction.guild_id,
            user_id=interaction.user.id,
            target=chosen,
            detail={"from": current.get(MODEL_KEY), "to": chosen},
        )
        shown = f"`{chosen}`" if chosen else f"the bot's default, `{self.configured}`"
        await interaction.edit_original_response(
            content=f"This server now uses {shown} unless a request picks another model."
        )

    @set_default.autocomplete("name")
    async def _model_names(
        self, interaction: discord.Interaction[DreamcordBot], typed: str
    ) -> list[app_commands.Choice[str]]:
        return filter_names(self.names, typed)

    async def _guild_settings(self, interaction: discord.Interaction[DreamcordBot]) -> dict:
        if interaction.guild_id is None:
            return {}
        return await self.bot.service.repos.settings.guild(interaction.guild_id)


class Styles(commands.GroupCog, group_name="style", group_description="Prompt style presets"):
    """A server's named styles: a template around the prompt, a negative, LoRAs, size, steps."""

    def __init__(self, bot: DreamcordBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(  # type: ignore[override]
        self, interaction: discord.Interaction[DreamcordBot]
    ) -> bool:
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
        interaction: discord.Interaction[DreamcordBot],
        name: app_commands.Range[str, 1, 32],
        template: app_commands.Range[str, 1, 1000],
        negative: app_commands.Range[str, 0, 1000] = "",
        loras: app_commands.Range[str, 0, 500] | None = None,
        size: str | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        settings = self.bot.settings
        style = make_style(
            name,
            template,
            negative,
            loras=loras,
            size=size,
            steps=steps,
            known_loras=self.bot.names.loras,
            max_pixels=settings.max_pixels,
            max_steps=settings.max_steps,
        )
        repos = self.bot.service.repos
        current = await repos.settings.guild(interaction.guild_id)
        replaced = style.name.lower() in styles_of(current)
        await repos.settings.set_guild(
            interaction.guild_id, {SETTINGS_KEY: with_style(current, style)}
        )
        await repos.audit.record(
            "style.update" if replaced else "style.add",
            guild_id=interaction.guild_id,
            user_id=interaction.user.id,
            target=style.name,
            detail=style.to_json(),
        )
        verb = "Replaced" if replaced else "Added"
        await interaction.edit_original_response(
            content=f"{verb} style `{style.name}`: {style.describe()}\n"
            f"Use it with /imagine style:{style.name}",
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(name="list", description="Show this server's styles")
    async def list_styles(self, interaction: discord.Interaction[DreamcordBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild = await self._guild_settings(interaction)
        styles = sorted(styles_of(guild).values(), key=lambda style: style.name.lower())
        embed = discord.Embed(title="Styles", colour=discord.Colour.blurple())
        for style in styles[:25]:
            embed.add_field(name=style.name, value=style.describe()[:1024], inline=False)
        if not styles:
            embed.description = "No styles yet: an admin adds one with /style add."
        await interaction.edit_original_response(
            embed=embed, allowed_mentions=discord.AllowedMentions.none()
        )

    @app_commands.command(name="remove", description="Remove a style (admins)")
    @app_commands.describe(name="the style to remove")
    async def remove(self, interaction: discord.Interaction[DreamcordBot], name: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        repos = self.bot.service.repos
        current = await repos.settings.guild(interaction.guild_id)
        style = find_style(current, name)
        await repos.settings.set_guild(
            interaction.guild_id, {SETTINGS_KEY: without_style(current, name)}
        )
        await repos.audit.record(
            "style.remove",
            guild_id=interaction.guild_id,
            user_id=interaction.user.id,
            target=style.name,
            detail=style.to_json(),
        )
        await interaction.edit_original_response(content=f"Removed style `{style.name}`.")

    @remove.autocomplete("name")
    async def _style_names(
        self, interaction: discord.Interaction[DreamcordBot], typed: str
    ) -> list[app_commands.Choice[str]]:
        return filter_names(style_names(await self._guild_settings(interaction)), typed)

    async def _guild_settings(self, interaction: discord.Interaction[DreamcordBot]) -> dict:
        if interaction.guild_id is None:
            return {}
        return await self.bot.service.repos.settings.guild(interaction.guild_id)
