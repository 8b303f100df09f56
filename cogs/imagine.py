"""`/imagine` and Cancel: from a prompt to a queued job with a live status message."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.models import upscaler_catalog
from bot.requests import build_request
from bot.service import Origin
from bot.styles import style_names
from bot.uploads import MAX_UPLOAD_BYTES, InitImage, store_init_image
from cogs import texts
from cogs.buttons import cancel_view
from cogs.checks import is_admin, place_of, reply_error
from cogs.library import filter_names
from cogs.models import apply_choices
from pipeline.errors import UserError
from pipeline.limits import MAX_CLIP_SKIP, MAX_HIRES_SCALE, MIN_HIRES_SCALE
from pipeline.request import MAX_SEED, GenerationRequest, Mode
from pipeline.samplers import SAMPLER_NAMES, SCHEDULE_NAMES

if TYPE_CHECKING:
    from bot.discord_bot import DreamcordBot
    from bot.settings import Settings

log = logging.getLogger(__name__)

SIZE_SUGGESTIONS = ("512x512", "512x768", "768x512", "2:3", "3:2", "3:4", "4:3", "16:9", "9:16")
DEFAULT_STRENGTH = 0.6
SAMPLER_CHOICES = [app_commands.Choice(name=name, value=name) for name in SAMPLER_NAMES]
SCHEDULE_CHOICES = [app_commands.Choice(name=name, value=name) for name in SCHEDULE_NAMES]


class Imagine(commands.Cog):
    """Slash command `/imagine`, and the Cancel button of a job's status message."""

    def __init__(self, bot: DreamcordBot) -> None:
        self.bot = bot

    @app_commands.command(description="Make images from a prompt (A1111 syntax, --ar 3:2 ...)")
    @app_commands.describe(
        prompt="what to draw; (word:1.2), <lora:name:0.8>, --ar 3:2, --no text all work",
        negative="what to avoid",
        size="WxH such as 512x768, or an aspect ratio such as 2:3",
        count="how many images",
        seed="seed of the first image (random when empty)",
        steps="sampling steps",
        cfg="how closely to follow the prompt",
        sampler="sampler (A1111 name)",
        schedule="schedule type (A1111 name; Automatic: the sampler's own)",
        clip_skip="text-encoder layers to skip: 1 (default), 2 for most anime models",
        hires="highres fix: draw at the base size, then refine at 2x",
        hires_scale="highres fix: how much larger, 1 to 2 (default 2; turns highres fix on)",
        hires_steps="highres fix: steps of the second pass (default 15; 0: the base steps)",
        hires_denoise="highres fix: denoising strength (default: the upscaler's own)",
        hires_upscaler="highres fix: upscaler, such as Latent or an installed ESRGAN model",
        lora="a LoRA to add (same as <lora:name:weight> in the prompt)",
        lora_weight="the LoRA's weight (default: its own, usually 1)",
        model="which model draws it (default: this server's)",
        style="a style preset of this server (/style list)",
        image="a picture to start from (image to image): PNG, JPEG or WebP",
        strength="how far to move away from the picture: 0.05 to 1 (default 0.6)",
    )
    @app_commands.choices(sampler=SAMPLER_CHOICES, schedule=SCHEDULE_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction[DreamcordBot],
        prompt: app_commands.Range[str, 1, 6000],
        negative: app_commands.Range[str, 0, 6000] | None = None,
        size: str | None = None,
        count: app_commands.Range[int, 1, 16] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
        sampler: app_commands.Choice[str] | None = None,
        schedule: app_commands.Choice[str] | None = None,
        clip_skip: app_commands.Range[int, 1, MAX_CLIP_SKIP] | None = None,
        hires: bool | None = None,
        hires_scale: app_commands.Range[float, MIN_HIRES_SCALE, MAX_HIRES_SCALE] | None = None,
        hires_steps: app_commands.Range[int, 0, 150] | None = None,
        hires_denoise: app_commands.Range[float, 0.01, 1.0] | None = None,
        hires_upscaler: app_commands.Range[str, 1, 100] | None = None,
        lora: app_commands.Range[str, 1, 64] | None = None,
        lora_weight: app_commands.Range[float, -3.0, 3.0] | None = None,
        model: app_commands.Range[str, 1, 200] | None = None,
        style: app_commands.Range[str, 1, 32] | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, 0.05, 1.0] | None = None,
    ) -> None:
        explicit: dict[str, Any] = {
            "count": count,
            "seed": seed,
            "steps": steps,
            "cfg": cfg,
            "sampler": sampler.value if sampler else None,
            "schedule": schedule.value if schedule else None,
            "clip_skip": clip_skip,
            "hires": hires,
            "hires_scale": hires_scale,
            "hires_steps": hires_steps,
            "hires_denoise": hires_denoise,
            "hires_upscaler": hires_upscaler,
            "lora": lora,
            "lora_weight": lora_weight,
            "model": model,
            "style": style,
        }
        if size:
            explicit["size"] = size
        await self.start_job(interaction, prompt, negative, explicit, image, strength)

    @imagine.autocomplete("size")
    async def _sizes(
        self, interaction: discord.Interaction[DreamcordBot], typed: str
    ) -> list[app_commands.Choice[str]]:
        return [
            app_commands.Choice(name=size, value=size)
            for size in SIZE_SUGGESTIONS
            if typed.lower() in size
        ][:25]

    @imagine.autocomplete("hires_upscaler")
    async def _upscalers(
        self, interaction: discord.Interaction[DreamcordBot], typed: str
    ) -> list[app_commands.Choice[str]]:
        return upscaler_choices(self.bot.settings, typed)

    @imagine.autocomplete("lora")
    async def _loras(
        self, interaction: discord.Interaction[DreamcordBot], typed: str
    ) -> list[app_commands.Choice[str]]:
        return filter_names(sorted(self.bot.names.loras, key=str.lower), typed)

    @imagine.autocomplete("model")
    async def _models(
        self, interaction: discord.Interaction[DreamcordBot], typed: str
    ) -> list[app_commands.Choice[str]]:
        models = self.bot.get_cog("Models")
        return filter_names(getattr(models, "names", []), typed)

    @imagine.autocomplete("style")
    async def _styles(
        self, interaction: discord.Interaction[DreamcordBot], typed: str
    ) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        server = await self.bot.service.repos.settings.guild(interaction.guild_id)
        return filter_names(style_names(server), typed)

    async def start_job(
        self,
        interaction: discord.Interaction[DreamcordBot],
        prompt: str,
        negative: str | None,
        explicit: dict[str, Any],
        image: discord.Attachment | None = None,
        strength: float | None = None,
    ) -> None:
        """Acknowledge at once, then build, store and queue the job, then show its status."""
        await interaction.response.defer(thinking=True)
        try:
            init = None if image is None else await self._init_image(image, explicit)
            request = await self._request(interaction, prompt, negative, explicit)
            if init is not None:
                request = replace(
                    request,
                    mode=Mode.IMG2IMG,
                    init_image=str(init.path),
                    strength=strength or DEFAULT_STRENGTH,
                )
            await self.submit(interaction, request)
        except UserError as error:
            await reply_error(interaction, str(error), replace_thinking=True)

    async def submit(
        self, interaction: discord.Interaction[DreamcordBot], request: GenerationRequest
    ) -> None:
        """Queue `request` for the clicking user and turn the deferred reply into its status."""
        service = self.bot.service
        await self.bot.policy.check(place_of(interaction, self.bot.settings), request)
        ticket = await service.submit(request, _origin(interaction))
        message = await interaction.edit_original_response(
            content=texts.queued(request, interaction.user.id, ticket.position, ticket.eta_s),
            view=cancel_view(ticket.job_id),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        await service.repos.jobs.set_message(ticket.job_id, message.id)
        self.bot.presenter.track(
            ticket.job_id, message.channel.id, message.id, interaction.filesize_limit
        )
        service.worker.want_previews(ticket.job_id)

    async def _request(
        self,
        interaction: discord.Interaction[DreamcordBot],
        prompt: str,
        negative: str | None,
        explicit: dict[str, Any],
    ) -> GenerationRequest:
        repos = self.bot.service.repos
        user = await repos.settings.user(interaction.user.id)
        server = await repos.settings.guild(interaction.guild_id) if interaction.guild_id else {}
        size = explicit.pop("size", None)
        if size:
            from pipeline.sizes import parse_size

            explicit["width"], explicit["height"] = parse_size(size, self.bot.settings.max_pixels)
        choices = await apply_choices(self.bot, prompt, negative, explicit, user, server)
        built = build_request(
            choices.prompt,
            self.bot.settings,
            negative=choices.negative,
            explicit=explicit,
            user=user,
            server=choices.server,
            known_loras=self.bot.names.loras,
            known_embeddings=self.bot.names.embeddings,
            known_hypernets=self.bot.names.hypernets,
            extra_loras=choices.loras,
        )
        return built.request

    async def _init_image(self, image: discord.Attachment, explicit: dict[str, Any]) -> InitImage:
        """Download the picture now (its link expires) and size the job like it."""
        if image.size > MAX_UPLOAD_BYTES:
            raise UserError(
                f"the picture is {image.size / 2**20:.1f} MiB; the most is "
                f"{MAX_UPLOAD_BYTES // 2**20} MiB: send a smaller one"
            )
        try:
            data = await image.read()
        except discord.HTTPException:
            raise UserError("Discord did not hand over the picture: attach it again") from None
        uploads = self.bot.settings.data_dir / "uploads"
        init = await asyncio.to_thread(
            store_init_image, data, uploads, self.bot.settings.max_pixels
        )
        if "size" not in explicit:
            explicit["width"], explicit["height"] = init.width, init.height
        return init

    async def cancel_from_button(
        self, interaction: discord.Interaction[DreamcordBot], job_id: str
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            outcome = await self.bot.service.cancel(
                job_id, interaction.user.id, is_admin(interaction, self.bot.settings)
            )
        except UserError as error:
            await interaction.followup.send(f"⚠️ {error}", ephemeral=True)
            return
        await interaction.followup.send(f"Cancelled: {outcome}.", ephemeral=True)


def upscaler_choices(settings: Settings, typed: str) -> list[app_commands.Choice[str]]:
    """The highres-fix upscalers matching what was typed: the built-ins and installed models."""
    return filter_names(list(upscaler_catalog(settings).names()), typed)


def _origin(interaction: discord.Interaction[DreamcordBot]) -> Origin:
    return Origin(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        interaction_id=interaction.id,
        interaction_token=interaction.token,
    )
