"""`/imagine`: from a prompt and options to a queued job with a live status message."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import BLEND_DIMENSIONS, App, ControlAsk, style_names
from cogs import texts
from cogs.attachments import read_picture
from cogs.client import DreamcordClient
from cogs.errors import think_in_public
from cogs.options import SAMPLER_CHOICES, SCHEDULE_CHOICES, filter_names, size_choices
from cogs.status import queue_job
from pipeline.errors import UserError
from pipeline.infotext import looks_like_infotext
from pipeline.limits import MAX_GUIDE_WEIGHT, MAX_HIRES_SCALE, MIN_HIRES_SCALE
from pipeline.prompt.limits import MAX_LORA_WEIGHT, MIN_LORA_WEIGHT
from pipeline.request import MAX_SEED

Interaction = discord.Interaction[DreamcordClient]

PREPROCESS_CHOICES = [
    app_commands.Choice(
        name="none: the picture is the map (depth map, pose skeleton...)", value="none"
    ),
    app_commands.Choice(name="canny: the picture's edges", value="canny"),
    app_commands.Choice(name="invert: black lines on white become white on black", value="invert"),
    app_commands.Choice(
        name="depth: a depth map (needs DATA_DIR/annotators/depth, else send one with none)",
        value="depth",
    ),
]
"""The built-in preprocessors (pipeline.request.CONTROL_PREPROCESSORS), told apart."""


@dataclass(frozen=True)
class ControlOptions:
    """/imagine's ControlNet options as given: one unit from Discord."""

    image: discord.Attachment | None = None
    model: str | None = None
    weight: float | None = None
    preprocessor: str | None = None

    async def asks(self, app: App) -> list[ControlAsk]:
        """The unit asked for (none when no option was given), its picture downloaded once its
        size passed (attachment links expire)."""
        if self == ControlOptions():
            return []
        picture = None
        if self.image is not None:
            app.controls.check_picture(self.image.size)
            picture = await read_picture(self.image)
        return [ControlAsk(picture, self.model, self.weight, preprocessor=self.preprocessor)]


async def control_choices(app: App, typed: str) -> list[app_commands.Choice[str]]:
    """The enabled ControlNet models containing `typed`, each shown with its type."""
    types = dict(await app.controls.choices())
    return [
        app_commands.Choice(name=f"{choice.value} ({types[choice.value]})", value=choice.value)
        for choice in filter_names(sorted(types, key=str.lower), typed)
    ]


@dataclass(frozen=True)
class ImageGuides:
    """The pictures a command gives the IP-Adapter: image prompts and style references."""

    prompts: Sequence[discord.Attachment] = ()
    styles: Sequence[discord.Attachment] = ()

    async def read(self, check: Callable[[int], None]) -> tuple[list[bytes], list[bytes]]:
        """Their bytes now (the links expire), each size checked before it is downloaded."""
        for one in (*self.prompts, *self.styles):
            check(one.size)
        return [await read_picture(one) for one in self.prompts], [
            await read_picture(one) for one in self.styles
        ]


class Imagine(commands.Cog):
    """Slash command `/imagine`; the job's status message and buttons are `cogs.status`'s."""

    def __init__(self, bot: DreamcordClient) -> None:
        self.bot = bot

    @app_commands.command(description="Make images from a prompt (A1111 syntax, --ar 3:2 ...)")
    @app_commands.describe(
        prompt="what to draw; (word:1.2), <lora:name:0.8>, --ar 3:2, --no text all work",
        parameters="an A1111 / Civitai recipe (PNG info) to redo; the other options override it",
        negative="what to avoid",
        size="WxH such as 512x768, or an aspect ratio such as 2:3",
        count="how many images",
        seed="seed of the first image (random when empty)",
        steps="sampling steps",
        cfg="how closely to follow the prompt",
        sampler="sampler (A1111 name)",
        schedule="schedule type (A1111 name; Automatic: the sampler's own)",
        hires="highres fix: draw at the base size, then refine at 2x",
        hires_scale="highres fix: how much larger, 1 to 2 (default 2; turns highres fix on)",
        hires_upscaler="highres fix: upscaler, such as Latent or an installed ESRGAN model",
        lora="a LoRA to add (same as <lora:name:weight> in the prompt)",
        lora_weight="the LoRA's weight (default: its own, usually 1)",
        model="which model draws it (default: this server's)",
        style="a style preset of this server (/style list)",
        image="a picture to start from (image to image): PNG, JPEG or WebP",
        strength="how far to move away from the picture: 0.05 to 1 (default 0.6)",
        control_image="ControlNet: a picture to follow (its edges), "
        "or a ready map: depth map, pose...",
        control="ControlNet: the model (default: the only one installed)",
        control_weight="ControlNet: how strongly the control image guides, 0 to 2 (default 1)",
        preprocess="ControlNet: how the picture becomes a map (default: canny for canny models)",
        image_prompt="a picture to draw from, as a prompt (IP-Adapter; --iw 0-3 sets its weight)",
        style_reference="a picture whose style to borrow (like --sref)",
    )
    @app_commands.choices(
        sampler=SAMPLER_CHOICES, schedule=SCHEDULE_CHOICES, preprocess=PREPROCESS_CHOICES
    )
    async def imagine(
        self,
        interaction: Interaction,
        prompt: app_commands.Range[str, 1, 6000] | None = None,
        parameters: app_commands.Range[str, 1, 6000] | None = None,
        negative: app_commands.Range[str, 0, 6000] | None = None,
        size: str | None = None,
        count: app_commands.Range[int, 1, 16] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
        sampler: app_commands.Choice[str] | None = None,
        schedule: app_commands.Choice[str] | None = None,
        hires: bool | None = None,
        hires_scale: app_commands.Range[float, MIN_HIRES_SCALE, MAX_HIRES_SCALE] | None = None,
        hires_upscaler: app_commands.Range[str, 1, 100] | None = None,
        lora: app_commands.Range[str, 1, 64] | None = None,
        lora_weight: app_commands.Range[float, MIN_LORA_WEIGHT, MAX_LORA_WEIGHT] | None = None,
        model: app_commands.Range[str, 1, 200] | None = None,
        style: app_commands.Range[str, 1, 32] | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, 0.05, 1.0] | None = None,
        control_image: discord.Attachment | None = None,
        control: app_commands.Range[str, 1, 64] | None = None,
        control_weight: app_commands.Range[float, 0.0, MAX_GUIDE_WEIGHT] | None = None,
        preprocess: app_commands.Choice[str] | None = None,
        image_prompt: discord.Attachment | None = None,
        style_reference: discord.Attachment | None = None,
    ) -> None:
        options: dict[str, Any] = {
            "negative": negative,
            "size": size or None,
            "count": count,
            "seed": seed,
            "steps": steps,
            "cfg": cfg,
            "sampler": sampler.value if sampler else None,
            "schedule": schedule.value if schedule else None,
            "hires": hires,
            "hires_scale": hires_scale,
            "hires_upscaler": hires_upscaler,
            "lora": lora,
            "lora_weight": lora_weight,
            "model": model,
            "style": style,
            "strength": strength,
        }
        if parameters is None and prompt is not None and looks_like_infotext(prompt):
            parameters, prompt = prompt, None
        controls = ControlOptions(
            control_image, control, control_weight, preprocess.value if preprocess else None
        )
        guides = ImageGuides(
            [image_prompt] if image_prompt else [], [style_reference] if style_reference else []
        )
        await self.start_job(interaction, prompt, options, image, parameters, controls, guides)

    @app_commands.command(description="Blend 2 to 5 pictures into new images (IP-Adapter)")
    @app_commands.describe(
        image1="the first picture",
        image2="the second picture",
        image3="a third picture",
        image4="a fourth picture",
        image5="a fifth picture",
        prompt="what to draw besides the pictures (optional; flags such as --no work)",
        dimensions="square (1:1), portrait (2:3) or landscape (3:2); default square",
    )
    @app_commands.choices(
        dimensions=[app_commands.Choice(name=name, value=name) for name in BLEND_DIMENSIONS]
    )
    async def blend(
        self,
        interaction: Interaction,
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        prompt: app_commands.Range[str, 1, 6000] | None = None,
        dimensions: app_commands.Choice[str] | None = None,
    ) -> None:
        pictures = [one for one in (image1, image2, image3, image4, image5) if one is not None]
        size = BLEND_DIMENSIONS[dimensions.value if dimensions else "square"]
        await self.start_job(
            interaction, prompt or "", {"size": size}, guides=ImageGuides(pictures)
        )

    @imagine.autocomplete("size")
    async def _sizes(self, interaction: Interaction, typed: str) -> list[app_commands.Choice[str]]:
        return size_choices(typed)

    @imagine.autocomplete("hires_upscaler")
    async def _upscalers(
        self, interaction: Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        return filter_names(interaction.client.app.catalog.upscalers, typed)

    @imagine.autocomplete("lora")
    async def _loras(self, interaction: Interaction, typed: str) -> list[app_commands.Choice[str]]:
        names = interaction.client.app.requests.names.loras
        return filter_names(sorted(names, key=str.lower), typed)

    @imagine.autocomplete("model")
    async def _models(self, interaction: Interaction, typed: str) -> list[app_commands.Choice[str]]:
        return filter_names(interaction.client.app.catalog.names, typed)

    @imagine.autocomplete("control")
    async def _controls(
        self, interaction: Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        return await control_choices(interaction.client.app, typed)

    @imagine.autocomplete("style")
    async def _styles(self, interaction: Interaction, typed: str) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        guild = await interaction.client.app.guild.settings(interaction.guild_id)
        return filter_names(style_names(guild.styles), typed)

    async def start_job(
        self,
        interaction: Interaction,
        prompt: str | None,
        options: dict[str, Any],
        image: discord.Attachment | None = None,
        parameters: str | None = None,
        controls: ControlOptions | None = None,
        guides: ImageGuides | None = None,
    ) -> None:
        """Acknowledge at once, then build, store and queue the job, then show its status.

        With pasted `parameters` the options given beside them win, and what the recipe asks
        for that cannot be honoured is told to the user privately once the job is queued.
        """
        await think_in_public(interaction)
        if prompt is None and parameters is None:
            raise UserError(
                "give a prompt, or paste an A1111 recipe (its PNG info) in the parameters option"
            )
        app = interaction.client.app
        recipe = None
        if parameters is not None:
            recipe = await app.requests.read_recipe(parameters, prompt, options)
        picture = None
        if image is not None:
            app.requests.check_picture(image.size)
            picture = await read_picture(image)
        control_asks = await (controls or ControlOptions()).asks(app)
        guides = guides or ImageGuides()
        prompts, styles = await guides.read(app.requests.check_picture)
        async with (
            app.requests.hold_picture(picture) as init,  # not kept if refused
            app.requests.hold_pictures(prompts) as image_prompts,
            app.requests.hold_pictures(styles) as style_references,
        ):
            if init is not None:
                options["init"] = init
            options.update(image_prompts=image_prompts, style_references=style_references)
            request = await app.requests.compose(
                prompt or "", options, interaction.user.id, interaction.guild_id, recipe=recipe
            )
            # The maps are made at the composed size, and kept only if the job is queued.
            async with app.controls.held(request, control_asks) as request:
                await queue_job(interaction, request)
        notes = list(recipe.notes if recipe else ())
        if recipe is not None and recipe.strength is not None and image is None:
            notes.append(texts.unused_strength(recipe.strength))
        if notes:
            await interaction.followup.send(
                texts.recipe_notes(notes),
                ephemeral=True,
                allowed_mentions=discord.AllowedMentions.none(),
            )
