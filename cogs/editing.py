"""The edit buttons under a one-image result, and `/edit` for a painted mask.

Vary (Region), Zoom Out 2x / 1.5x, Custom Zoom, the four Pan arrows and Make Square are
`DynamicItem`s with custom ids `dc:x:<edit>:<generation id>:<image index>`, and the region
picker a select `dc:xr:<generation id>:<image index>`: a click is answered from the database,
so they work after a restart. Who may use them is the gallery's rule for buttons that post
(`Reach.PUBLIC`), checked on every click, select and modal submit. The canvas, mask and
request are `App.edits`' work; this module only asks and answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import (
    REGIONS,
    Edit,
    Generation,
    Operation,
    PreparedEdit,
    Reach,
    parse_factor,
)
from cogs.attachments import read_picture
from cogs.checks import ServedItem, viewer_of
from cogs.client import DreamcordClient
from cogs.errors import answer_error, guarded, think_in_public
from cogs.fitting import INPUT_VALUE, MESSAGE, escape, fit, fit_lines
from cogs.status import queue_job

Interaction = discord.Interaction[DreamcordClient]

EDIT_ROW = 2
PAN_ROW = 3
"""The edit buttons take rows 3 and 4 of a result, under U, V and the tools."""


class EditAction(StrEnum):
    """An edit button; the value is its part of the custom_id."""

    VARY_REGION = "region"
    ZOOM_2 = "zoom2"
    ZOOM_1_5 = "zoom1.5"
    CUSTOM_ZOOM = "zoom"
    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"
    SQUARE = "square"


_ACTIONS = "|".join(re.escape(action.value) for action in EditAction)
_IDS = r"(?P<generation>[0-9]{1,18}):(?P<index>[0-9]{1,2})"
ZOOMS = {EditAction.ZOOM_2: 2.0, EditAction.ZOOM_1_5: 1.5}
PANS = {
    EditAction.LEFT: "left",
    EditAction.RIGHT: "right",
    EditAction.UP: "up",
    EditAction.DOWN: "down",
}
ARROWS = {EditAction.LEFT: "⬅️", EditAction.RIGHT: "➡️", EditAction.UP: "⬆️", EditAction.DOWN: "⬇️"}
LABELS = {
    EditAction.VARY_REGION: ("Vary (Region)", "🖌️"),
    EditAction.ZOOM_2: ("Zoom Out 2x", "🔍"),
    EditAction.ZOOM_1_5: ("Zoom Out 1.5x", "🔍"),
    EditAction.CUSTOM_ZOOM: ("Custom Zoom", "🔍"),
    EditAction.SQUARE: ("Make Square", "⬛"),
}
REGION_NAMES = {
    "top-left": "Top left",
    "top": "Top",
    "top-right": "Top right",
    "left": "Left",
    "centre": "Centre",
    "right": "Right",
    "bottom-left": "Bottom left",
    "bottom": "Bottom",
    "bottom-right": "Bottom right",
    "top-half": "Top half",
    "bottom-half": "Bottom half",
    "left-half": "Left half",
    "right-half": "Right half",
    "border": "Border (all but the centre)",
}
"""How the picker names each of `REGIONS` (the 3x3 cells row by row, halves, border)."""


async def _editable(interaction: Interaction, generation_id: int, index: int) -> Generation:
    """The result, if the clicker may post an edit of it here (else a UserError)."""
    return await interaction.client.app.gallery.result(
        generation_id, index, viewer_of(interaction), Reach.PUBLIC
    )


async def run_edit(interaction: Interaction, generation_id: int, index: int, edit: Edit) -> None:
    """Acknowledge in public, then compose, store and queue the edit, and tell its notes."""
    generation = await _editable(interaction, generation_id, index)
    await think_in_public(interaction)
    app = interaction.client.app
    user, guild = interaction.user.id, interaction.guild_id
    async with app.edits.of_result(generation, index, edit, user, guild) as prepared:
        await queue_job(interaction, prepared.request)
    await send_notes(interaction, prepared)


async def send_notes(interaction: Interaction, prepared: PreparedEdit) -> None:
    """What the edit did differently from what was asked (a mask resized ...), privately."""
    if not prepared.notes:
        return
    header = "ℹ️ About this edit:"
    lines = [f"- {escape(note)}" for note in prepared.notes]
    room = MESSAGE - len(header) - 1
    text = f"{header}\n{fit_lines(lines, room, more=lambda left: f'- and {left} more')}"
    await interaction.followup.send(
        text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
    )


class EditButton(
    ServedItem,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"dc:x:(?P<action>{_ACTIONS}):{_IDS}",
):
    """An edit button under a one-image result (see the module docstring)."""

    def __init__(self, action: EditAction, generation_id: int, index: int) -> None:
        label, emoji = LABELS.get(action, (None, ARROWS.get(action)))
        row = PAN_ROW if action in PANS or action is EditAction.SQUARE else EDIT_ROW
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label,
            emoji=emoji,
            style=discord.ButtonStyle.secondary,
            custom_id=f"dc:x:{action}:{generation_id}:{index}",
        )
        super().__init__(button, row=row)
        self.action = action
        self.generation_id = generation_id
        self.index = index

    @classmethod
    async def from_custom_id(  # type: ignore[override]  # discord.py hands over the Button
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> EditButton:
        return cls(EditAction(match["action"]), int(match["generation"]), int(match["index"]))

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        await guarded(interaction, self._answer(interaction))

    async def _answer(self, interaction: Interaction) -> None:
        if self.action is EditAction.VARY_REGION:
            await _editable(interaction, self.generation_id, self.index)
            await interaction.response.send_message(
                "Which parts should be redrawn? Pick one or more, then write the new prompt.",
                view=region_view(self.generation_id, self.index),
                ephemeral=True,
            )
        elif self.action is EditAction.CUSTOM_ZOOM:
            generation = await _editable(interaction, self.generation_id, self.index)
            await interaction.response.send_modal(ZoomModal(generation, self.index))
        elif self.action in ZOOMS:
            edit = Edit(Operation.ZOOM_OUT, factor=ZOOMS[self.action])
            await run_edit(interaction, self.generation_id, self.index, edit)
        elif self.action in PANS:
            edit = Edit(Operation.PAN, direction=PANS[self.action])
            await run_edit(interaction, self.generation_id, self.index, edit)
        else:
            await run_edit(interaction, self.generation_id, self.index, Edit(Operation.SQUARE))


class RegionSelect(
    ServedItem,
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=rf"dc:xr:{_IDS}",
):
    """The Vary (Region) picker: the named regions, one or more."""

    def __init__(self, generation_id: int, index: int) -> None:
        select: discord.ui.Select[Any] = discord.ui.Select(
            custom_id=f"dc:xr:{generation_id}:{index}",
            placeholder="Regions to redraw",
            min_values=1,
            max_values=len(REGIONS),
            options=[
                discord.SelectOption(label=REGION_NAMES[name], value=name) for name in REGIONS
            ],
        )
        super().__init__(select)
        self.generation_id = generation_id
        self.index = index

    @classmethod
    async def from_custom_id(  # type: ignore[override]  # discord.py hands over the Select
        cls, interaction: discord.Interaction, item: discord.ui.Select[Any], match: re.Match[str]
    ) -> RegionSelect:
        return cls(int(match["generation"]), int(match["index"]))

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        await guarded(interaction, self._answer(interaction))

    async def _answer(self, interaction: Interaction) -> None:
        generation = await _editable(interaction, self.generation_id, self.index)
        regions = tuple(self.item.values)
        await interaction.response.send_modal(RegionModal(generation, self.index, regions))


def region_view(generation_id: int, index: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RegionSelect(generation_id, index))
    return view


def _prompt_input(default: str) -> discord.ui.TextInput[Any]:
    """The prompt, prefilled with the result's (cut to what a text input holds)."""
    return discord.ui.TextInput(
        label="Prompt",
        custom_id="prompt",
        style=discord.TextStyle.paragraph,
        max_length=INPUT_VALUE,
        default=fit(default, INPUT_VALUE, marker=""),
    )


class RegionModal(discord.ui.Modal):
    """The new prompt for the chosen regions (the rest of the picture stays)."""

    def __init__(self, generation: Generation, index: int, regions: Sequence[str]) -> None:
        super().__init__(title="Vary (Region): the new prompt", custom_id=f"dc:xrm:{generation.id}")
        self.generation_id, self.index, self.regions = generation.id, index, tuple(regions)
        self.prompt = _prompt_input(generation.request.prompt)
        self.add_item(self.prompt)

    async def on_submit(self, interaction: Interaction) -> None:  # type: ignore[override]
        edit = Edit(Operation.VARY_REGION, prompt=self.prompt.value, regions=self.regions)
        await run_edit(interaction, self.generation_id, self.index, edit)

    async def on_error(self, interaction: Interaction, error: Exception, /) -> None:  # type: ignore[override]
        await answer_error(interaction, error)


class ZoomModal(discord.ui.Modal):
    """Custom Zoom: the prompt and how far to zoom out (more than 1, at most 2)."""

    def __init__(self, generation: Generation, index: int) -> None:
        super().__init__(title="Custom Zoom", custom_id=f"dc:xzm:{generation.id}")
        self.generation_id, self.index = generation.id, index
        self.prompt = _prompt_input(generation.request.prompt)
        self.factor: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Zoom out by (more than 1, up to 2)",
            custom_id="factor",
            default="1.5",
            max_length=10,
        )
        self.add_item(self.prompt)
        self.add_item(self.factor)

    async def on_submit(self, interaction: Interaction) -> None:  # type: ignore[override]
        factor = parse_factor(self.factor.value)  # a bad value is refused before any answer
        edit = Edit(Operation.ZOOM_OUT, prompt=self.prompt.value, factor=factor)
        await run_edit(interaction, self.generation_id, self.index, edit)

    async def on_error(self, interaction: Interaction, error: Exception, /) -> None:  # type: ignore[override]
        await answer_error(interaction, error)


def edit_buttons(generation: Generation) -> list[EditButton]:
    """The edit buttons of a one-image result: Make Square only when it is not square."""
    image = generation.images[0]
    actions: list[EditAction] = [a for a in EditAction if a is not EditAction.SQUARE]
    if image.width != image.height:
        actions.append(EditAction.SQUARE)
    return [EditButton(action, generation.id, 0) for action in actions]


EDIT_ITEMS = (EditButton, RegionSelect)
"""The persistent edit components, for `add_dynamic_items`."""


class Editing(commands.Cog):
    """`/edit`: repaint the white part of a mask you painted over your picture."""

    def __init__(self, bot: DreamcordClient) -> None:
        self.bot = bot

    @app_commands.command(description="Repaint part of a picture: white in the mask is redrawn")
    @app_commands.describe(
        image="the picture to edit: PNG, JPEG or WebP",
        mask="the same picture's mask: white = repaint, black = keep (PNG)",
        prompt="what to draw in the white part",
        strength="how far to move away from what is there: 0.05 to 1 (default 0.75)",
        mask_blur="soften the mask's edge by this many pixels (default 4)",
        inpaint_area="whole picture (default), or only the masked part at full detail",
    )
    @app_commands.choices(
        inpaint_area=[
            app_commands.Choice(name="Whole picture", value="whole"),
            app_commands.Choice(name="Only masked", value="masked"),
        ]
    )
    async def edit(
        self,
        interaction: Interaction,
        image: discord.Attachment,
        mask: discord.Attachment,
        prompt: app_commands.Range[str, 1, 6000],
        strength: app_commands.Range[float, 0.05, 1.0] | None = None,
        mask_blur: app_commands.Range[int, 0, 64] | None = None,
        inpaint_area: app_commands.Choice[str] | None = None,
    ) -> None:
        await think_in_public(interaction)
        app = interaction.client.app
        for attachment in (image, mask):
            app.requests.check_picture(attachment.size)
        picture, painted = await read_picture(image), await read_picture(mask)
        options = {
            "strength": strength,
            "mask_blur": mask_blur,
            "inpaint_area": inpaint_area.value if inpaint_area else None,
        }
        user, guild = interaction.user.id, interaction.guild_id
        async with app.edits.of_upload(picture, painted, prompt, options, user, guild) as prepared:
            await queue_job(interaction, prepared.request)
        await send_notes(interaction, prepared)
