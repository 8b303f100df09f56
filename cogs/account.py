"""A user's own things: `/settings` (defaults), `/history`, `/favourites` and `/show`."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.models import upscaler_catalog
from bot.requests import HIRES_FIELDS, settings_defaults
from cogs import pages, texts
from cogs.buttons import result_view
from cogs.checks import reply_error
from cogs.errors import Refused
from cogs.imagine import SAMPLER_CHOICES, SCHEDULE_CHOICES, upscaler_choices
from pipeline.errors import UserError
from pipeline.limits import MAX_CLIP_SKIP, MAX_HIRES_SCALE, MIN_HIRES_SCALE
from pipeline.request import HiresSpec
from pipeline.samplers import AUTOMATIC, find_sampler, find_schedule
from pipeline.sizes import parse_size

if TYPE_CHECKING:
    from bot.discord_bot import DreamcordBot
    from bot.service import Generation
    from bot.settings import Settings

DEFAULT_KEYS = (
    "size",
    "steps",
    "cfg",
    "sampler",
    "schedule",
    "count",
    "clip_skip",
    "negative",
    "hires",
    *HIRES_FIELDS,
)
"""What `/settings` stores, keyed as `bot.requests.saved_defaults` reads them."""
MIN_CFG, MAX_CFG = 1.0, 30.0


def checked_defaults(values: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The options a user gave, validated like a request and in their stored form.

    Raises UserError naming the option to fix. An empty negative clears the saved one.
    """
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key == "negative":
            checked[key] = str(value).strip() or None  # None removes the saved one
        elif key == "size":
            width, height = parse_size(str(value), settings.max_pixels)
            checked[key] = f"{width}x{height}"
        elif key == "sampler":
            checked[key] = find_sampler(str(value)).name
        elif key == "schedule":
            checked[key] = find_schedule(str(value))
        elif key == "steps":
            checked[key] = _in_range("steps", int(value), 1, settings.max_steps)
        elif key == "count":
            checked[key] = _in_range("count", int(value), 1, settings.max_images)
        elif key == "clip_skip":
            checked[key] = _in_range("clip skip", int(value), 1, MAX_CLIP_SKIP)
        elif key == "cfg":
            checked[key] = _in_float_range("cfg", value, MIN_CFG, MAX_CFG)
        elif key == "hires":
            checked[key] = bool(value)
        elif key == "hires_scale":
            checked[key] = _in_float_range("hires scale", value, MIN_HIRES_SCALE, MAX_HIRES_SCALE)
        elif key == "hires_steps":
            checked[key] = _in_range("hires steps", int(value), 0, settings.max_steps)
        elif key == "hires_denoise":
            checked[key] = _in_float_range("hires denoise", value, 0.01, 1.0)
        elif key == "hires_upscaler":
            checked[key] = upscaler_catalog(settings).find(str(value)).name
        else:
            raise ValueError(f"unknown default {key!r}")
    return checked


def _in_range(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise UserError(f"{name} {value} is out of range: use {low} to {high}")
    return value


def _in_float_range(name: str, value: float, low: float, high: float) -> float:
    if not low <= float(value) <= high:
        raise UserError(f"{name} {value:g} is out of range: use {low:g} to {high:g}")
    return float(value)


def effective_defaults(
    user: Mapping[str, Any], server: Mapping[str, Any], settings: Settings
) -> list[tuple[str, str, str]]:
    """(name, value, where it comes from) for each default, as `/imagine` would apply it."""
    base = settings_defaults(settings)
    fallback = {
        "size": f"{base['width']}x{base['height']}",
        "steps": base["steps"],
        "cfg": base["cfg"],
        "sampler": base["sampler"],
        "schedule": AUTOMATIC,
        "count": base["count"],
        "clip_skip": 1,
        "negative": settings.default_negative,
        "hires": False,
        "hires_scale": HiresSpec.scale,
        "hires_steps": HiresSpec.steps,
        "hires_denoise": "the upscaler's own",
        "hires_upscaler": HiresSpec.upscaler,
    }
    rows = []
    for key in DEFAULT_KEYS:
        if key in user:
            value, origin = user[key], "yours"
        elif key in server:
            value, origin = server[key], "server"
        else:
            value, origin = fallback[key], "bot"
        if isinstance(value, bool):
            shown = "on" if value else "off"
        elif isinstance(value, float):
            shown = f"{value:g}"
        else:
            shown = str(value) if value != "" else "(none)"
        rows.append((key, shown, origin))
    return rows


class Account(commands.Cog):
    """Per-user defaults, history, favourites and re-posting a result."""

    def __init__(self, bot: DreamcordBot) -> None:
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
        interaction: discord.Interaction[DreamcordBot],
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
        repos = self.bot.service.repos
        user_id = interaction.user.id
        try:
            changes = checked_defaults(given, self.bot.settings)
        except UserError as error:
            await reply_error(interaction, f"{error}. Nothing was saved.")
            return
        if reset:
            await repos.settings.set_user(user_id, dict.fromkeys(DEFAULT_KEYS))
        if changes:
            await repos.settings.set_user(user_id, changes)
        user = await repos.settings.user(user_id)
        server = await repos.settings.guild(interaction.guild_id) if interaction.guild_id else {}
        changed = reset or any(value is not None for value in given.values())
        title = "Your defaults, saved" if changed else "Your defaults for /imagine"
        embed = discord.Embed(title=title, colour=discord.Colour.blurple())
        for key, value, origin in effective_defaults(user, server, self.bot.settings):
            shown = value if len(value) <= 1000 else value[:999] + "…"
            embed.add_field(name=f"{key} ({origin})", value=shown or "(none)", inline=True)
        embed.set_footer(text="Options you give /imagine, or flags in the prompt, win over these.")
        await interaction.followup.send(
            embed=embed, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    @settings_command.autocomplete("hires_upscaler")
    async def _upscalers(
        self, interaction: discord.Interaction[DreamcordBot], typed: str
    ) -> list[app_commands.Choice[str]]:
        return upscaler_choices(self.bot.settings, typed)

    # /history and /favourites

    @app_commands.command(name="history", description="Your images, newest first")
    @app_commands.describe(publish="show the list to the channel instead of only to you")
    async def history(
        self, interaction: discord.Interaction[DreamcordBot], publish: bool = False
    ) -> None:
        await self._send_list(interaction, pages.HISTORY, publish)

    @app_commands.command(name="favourites", description="Images you starred, newest first")
    @app_commands.describe(publish="show the list to the channel instead of only to you")
    async def favourites(
        self, interaction: discord.Interaction[DreamcordBot], publish: bool = False
    ) -> None:
        await self._send_list(interaction, pages.FAVOURITES, publish)

    async def _send_list(
        self, interaction: discord.Interaction[DreamcordBot], kind: str, public: bool
    ) -> None:
        await interaction.response.defer(ephemeral=not public, thinking=True)
        page = await self.load_page(kind, interaction.user.id, 0)
        await self._post_page(interaction, page, public)

    async def on_page(
        self,
        interaction: discord.Interaction[DreamcordBot],
        kind: str,
        owner_id: int,
        number: int,
        action: str,
    ) -> None:
        """A Previous, Next or Publish click (see cogs.pages)."""
        if action != pages.TURN_PUBLIC and interaction.user.id != owner_id:
            raise Refused(f"only <@{owner_id}> can use these buttons: try /{_command(kind)}")
        if action == pages.PUBLISH:
            await interaction.response.defer(thinking=True)
            page = await self.load_page(kind, owner_id, number)
            await self._post_page(interaction, page, public=True)
            return
        await interaction.response.defer()
        page = await self.load_page(kind, owner_id, number)
        files, names = await asyncio.to_thread(pages.page_files, page)
        await interaction.edit_original_response(
            content=pages.page_header(page) if page.entries else pages.EMPTY[kind],
            embeds=pages.page_embeds(page, names),
            attachments=files,
            view=pages.page_view(page, action == pages.TURN_PUBLIC),
            allowed_mentions=discord.AllowedMentions.none(),
        )

    async def _post_page(
        self, interaction: discord.Interaction[DreamcordBot], page: pages.Page, public: bool
    ) -> None:
        if not page.entries:
            await interaction.followup.send(pages.EMPTY[page.kind], ephemeral=not public)
            return
        files, names = await asyncio.to_thread(pages.page_files, page)
        await interaction.followup.send(
            pages.page_header(page),
            embeds=pages.page_embeds(page, names),
            files=files,
            view=pages.page_view(page, public),
            ephemeral=not public,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    async def load_page(self, kind: str, owner_id: int, number: int) -> pages.Page:
        """Page `number` of a list, or its last page when the list has become shorter."""
        while True:
            if kind == pages.HISTORY:
                page = await self._history_page(owner_id, number)
            else:
                page = await self._favourites_page(owner_id, number)
            if page.entries or number == 0:
                return page
            number = 0 if page.total is None else max(0, (page.total - 1) // pages.PAGE_SIZE)

    async def _history_page(self, owner_id: int, number: int) -> pages.Page:
        size = pages.PAGE_SIZE
        generations = await self.bot.service.repos.generations.history(
            owner_id, limit=(number + 1) * size + 1
        )
        shown = generations[number * size : (number + 1) * size]
        entries = tuple(self._entry(g, f"Generation {g.id}", range(len(g.images))) for g in shown)
        total = len(generations) if len(generations) <= (number + 1) * size else None
        return pages.Page(
            pages.HISTORY,
            owner_id,
            number,
            entries,
            has_next=len(generations) > (number + 1) * size,
            total=total,
        )

    async def _favourites_page(self, owner_id: int, number: int) -> pages.Page:
        repos = self.bot.service.repos
        total = await repos.favourites.count(owner_id)
        favourites = await repos.favourites.list(owner_id, number, page_size=pages.PAGE_SIZE)
        entries = []
        for favourite in favourites:
            image = favourite.image
            generation = await repos.generations.get(image.generation_id)
            if generation is None:
                continue
            title = f"Image {image.idx + 1} of generation {generation.id}"
            entries.append(self._entry(generation, title, [image.idx]))
        return pages.Page(
            pages.FAVOURITES,
            owner_id,
            number,
            tuple(entries),
            has_next=(number + 1) * pages.PAGE_SIZE < total,
            total=total,
        )

    def _entry(self, generation: Generation, title: str, indexes: Any) -> pages.Entry:
        root = self.bot.service.images.root
        images = [generation.images[i] for i in indexes]
        return pages.Entry(
            generation_id=generation.id,
            title=title,
            prompt=generation.request.prompt,
            seeds=tuple(image.seed for image in images),
            size=f"{generation.request.width}x{generation.request.height}",
            created_at=generation.created_at,
            link=pages.jump_link(generation.guild_id, generation.channel_id, generation.message_id),
            image_paths=tuple(root / image.path for image in images),
        )

    # /show

    @app_commands.command(name="show", description="Post a generation again, with its buttons")
    @app_commands.rename(generation_id="id")
    @app_commands.describe(generation_id="the generation id (see /history or Info)")
    async def show(
        self,
        interaction: discord.Interaction[DreamcordBot],
        generation_id: app_commands.Range[int, 1, 2**53 - 1],
    ) -> None:
        await interaction.response.defer(thinking=True)
        generation = await self.bot.service.repos.generations.get(generation_id)
        mine = generation is not None and generation.user_id == interaction.user.id
        if (
            generation is None
            or generation.deleted_at is not None
            or not (mine or generation.guild_id == interaction.guild_id)
        ):
            await reply_error(
                interaction,
                f"there is no generation {generation_id} to show: pick one from /history",
                replace_thinking=True,
            )
            return
        limit = interaction.filesize_limit
        grid = await asyncio.to_thread(self.bot.presenter.grid_file, generation, limit)
        content = texts.finished(
            generation.request, generation.user_id, [image.seed for image in generation.images]
        )
        await interaction.followup.send(
            content,
            file=discord.File(io.BytesIO(grid.data), grid.filename),
            view=result_view(generation),
            allowed_mentions=discord.AllowedMentions.none(),
        )


def _command(kind: str) -> str:
    return "history" if kind == pages.HISTORY else "favourites"
