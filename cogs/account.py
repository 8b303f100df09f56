"""A user's own things: `/settings` (defaults), `/history`, `/favourites` and `/show`."""

from __future__ import annotations

import asyncio

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Reach, SavedDefaults
from cogs import pages, texts
from cogs.buttons import result_view
from cogs.checks import viewer_of
from cogs.client import DreamcordClient
from cogs.errors import think_in_public
from cogs.fitting import fit_embed, fit_escaped
from cogs.options import SAMPLER_CHOICES, SCHEDULE_CHOICES, filter_names
from cogs.presenter import notes_text, upload
from pipeline.limits import MAX_CLIP_SKIP, MAX_HIRES_SCALE, MIN_HIRES_SCALE

Interaction = discord.Interaction[DreamcordClient]

SHOWN_PRIVATELY = (
    "-# Only you can see this: it was made in an NSFW channel, so it is posted only in NSFW "
    "channels."
)


def defaults_embed(saved: SavedDefaults) -> discord.Embed:
    """`/settings`: each default with where it comes from (yours, the server's, the bot's)."""
    title = "Your defaults, saved" if saved.changed else "Your defaults for /imagine"
    embed = discord.Embed(title=title, colour=discord.Colour.blurple())
    for key, value, origin in saved.rows:
        embed.add_field(
            name=f"{key} ({origin})", value=fit_escaped(value, 1000) or "(none)", inline=True
        )
    embed.set_footer(text="Options you give /imagine, or flags in the prompt, win over these.")
    return fit_embed(embed)


class Account(commands.Cog):
    """Per-user defaults, history, favourites and re-posting a result."""

    def __init__(self, bot: DreamcordClient) -> None:
        self.bot = bot

    # /settings

    @app_commands.command(
        name="settings", description="Your defaults for /imagine (no options: show them)"
    )
    @app_commands.describe(
        negative="default negative prompt (empty text clears it)",
        size="default size, WxH such as 512x768 or a ratio such as 2:3",
        steps="default sampling steps",
        cfg="default CFG scale",
        sampler="default sampler",
        schedule="default schedule type (Automatic: the sampler's own)",
        count="default number of images",
        clip_skip="default clip skip: 1, or 2 for most anime models",
        hires="highres fix by default",
        hires_scale="highres fix: how much larger, 1 to 2 (default 2)",
        hires_steps="highres fix: steps of the second pass (default 15; 0: the base steps)",
        hires_denoise="highres fix: denoising strength (default: the upscaler's own)",
        hires_upscaler="highres fix: upscaler (default Latent)",
        reset="forget all your defaults first",
    )
    @app_commands.choices(sampler=SAMPLER_CHOICES, schedule=SCHEDULE_CHOICES)
    async def settings_command(
        self,
        interaction: Interaction,
        negative: app_commands.Range[str, 0, 6000] | None = None,
        size: str | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
        sampler: app_commands.Choice[str] | None = None,
        schedule: app_commands.Choice[str] | None = None,
        count: app_commands.Range[int, 1, 16] | None = None,
        clip_skip: app_commands.Range[int, 1, MAX_CLIP_SKIP] | None = None,
        hires: bool | None = None,
        hires_scale: app_commands.Range[float, MIN_HIRES_SCALE, MAX_HIRES_SCALE] | None = None,
        hires_steps: app_commands.Range[int, 0, 150] | None = None,
        hires_denoise: app_commands.Range[float, 0.01, 1.0] | None = None,
        hires_upscaler: app_commands.Range[str, 1, 100] | None = None,
        reset: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        given = {
            "negative": negative,
            "size": size,
            "steps": steps,
            "cfg": cfg,
            "sampler": sampler.value if sampler else None,
            "schedule": schedule.value if schedule else None,
            "count": count,
            "clip_skip": clip_skip,
            "hires": hires,
            "hires_scale": hires_scale,
            "hires_steps": hires_steps,
            "hires_denoise": hires_denoise,
            "hires_upscaler": hires_upscaler,
        }
        saved = await interaction.client.app.defaults.save(
            interaction.user.id, interaction.guild_id, given, reset
        )
        await interaction.followup.send(
            embed=defaults_embed(saved),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @settings_command.autocomplete("hires_upscaler")
    async def _upscalers(
        self, interaction: Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        return filter_names(interaction.client.app.catalog.upscalers, typed)

    # /history and /favourites

    @app_commands.command(name="history", description="Your images, newest first")
    @app_commands.describe(publish="show the list to the channel instead of only to you")
    async def history(self, interaction: Interaction, publish: bool = False) -> None:
        await self._send_list(interaction, pages.HISTORY, publish)

    @app_commands.command(name="favourites", description="Images you starred, newest first")
    @app_commands.describe(publish="show the list to the channel instead of only to you")
    async def favourites(self, interaction: Interaction, publish: bool = False) -> None:
        await self._send_list(interaction, pages.FAVOURITES, publish)

    async def _send_list(self, interaction: Interaction, kind: str, public: bool) -> None:
        await interaction.response.defer(ephemeral=not public, thinking=True)
        await pages.send_list(interaction, kind, public)

    # /show

    @app_commands.command(name="show", description="Post a generation again, with its buttons")
    @app_commands.rename(generation_id="id")
    @app_commands.describe(generation_id="the generation id (see /history or Info)")
    async def show(
        self,
        interaction: Interaction,
        generation_id: app_commands.Range[int, 1, 2**53 - 1],
    ) -> None:
        await think_in_public(interaction)
        app = interaction.client.app
        viewer = viewer_of(interaction)
        generation, reach = await app.gallery.to_show(generation_id, viewer)
        private = reach is not Reach.PUBLIC
        # What only its owner sees is screened as in an NSFW channel: nobody else is shown it.
        screening = await app.safety.screen(
            generation.images, interaction.guild_id, viewer.channel_is_nsfw or private
        )
        limit = interaction.filesize_limit
        presenter = interaction.client.presenter
        grid = await asyncio.to_thread(presenter.grid_file, generation, limit, screening)
        content = texts.finished(
            generation.request, generation.user_id, [image.seed for image in generation.images]
        )
        if private:
            # Made in an NSFW channel and asked for outside one: only its owner sees it.
            await interaction.delete_original_response()
            content = f"{SHOWN_PRIVATELY}\n{content}"
        await interaction.followup.send(
            content + notes_text(screening, grid),
            files=upload(grid),
            view=result_view(generation),
            ephemeral=private,
            allowed_mentions=discord.AllowedMentions.none(),
        )
