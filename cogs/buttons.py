"""The buttons under a result and what each click does: upscale, vary, reroll, edit,
favourite, info, delete (the image edits, Zoom Out and the rest, are `cogs.editing`'s), and
under an upscale the tiled upscales (Upscale 2x Subtle, 2x Creative, 4x).

Each is a `DynamicItem` whose custom_id carries the action and the ids
(`dc:<action>:<generation id>[:<image index>]`, well under Discord's 100 characters). A click
is answered from the database through the App, so buttons work after a restart and long after
the interaction token is gone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from enum import StrEnum
from functools import partial
from typing import Any

import discord

from bot.app import Generation, Reach
from cogs import texts
from cogs.checks import ServedItem, is_admin, viewer_of
from cogs.client import DreamcordClient
from cogs.editing import EDIT_ITEMS, edit_buttons
from cogs.errors import answer_error, guarded, think_in_public
from cogs.fitting import COMPONENTS, INPUT_VALUE, fit
from cogs.status import CancelButton, queue_job
from pipeline.request import Mode

log = logging.getLogger(__name__)

Interaction = discord.Interaction[DreamcordClient]


class Action(StrEnum):
    """What a result button does; the value is the letter in its custom_id."""

    UPSCALE = "u"
    SUBTLE_2X = "s"
    CREATIVE_2X = "C"
    SUBTLE_4X = "q"
    VARY = "v"
    REROLL = "r"
    EDIT = "e"
    FAVOURITES = "F"
    FAVOURITE = "f"
    INFO = "i"
    DELETE = "d"


_LETTERS = "".join(action.value for action in Action)


TILED = {
    Action.SUBTLE_2X: (2, "subtle", "Upscale 2x Subtle"),
    Action.CREATIVE_2X: (2, "creative", "Upscale 2x Creative"),
    Action.SUBTLE_4X: (4, "subtle", "Upscale 4x"),
}
"""The tiled upscales offered under an upscale: (factor, mode, label). 4x is Subtle: each
tile then sees a sixteenth of the picture, and Creative's denoise would let tiles that see
only a cheek or a cloud draw a subject of their own (docs/upscaling.md)."""
POSTING = {Action.UPSCALE, Action.VARY, Action.REROLL, Action.EDIT, *TILED}
"""Actions whose answer is posted in the channel; the others answer only the clicker."""


class ResultButton(
    ServedItem,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"dc:(?P<action>[{_LETTERS}]):(?P<generation>[0-9]{{1,18}})(?::(?P<index>[0-9]{{1,2}}))?",
):
    """A button under a result (see the module docstring)."""

    def __init__(
        self,
        action: Action,
        generation_id: int,
        index: int | None = None,
        *,
        label: str | None = None,
        emoji: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    ) -> None:
        suffix = "" if index is None else f":{index}"
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label, emoji=emoji, style=style, custom_id=f"dc:{action}:{generation_id}{suffix}"
        )
        super().__init__(button)
        self.action = action
        self.generation_id = generation_id
        self.index = index

    @classmethod
    async def from_custom_id(  # type: ignore[override]  # discord.py hands over the Button
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> ResultButton:
        index = match["index"]
        return cls(
            Action(match["action"]),
            int(match["generation"]),
            None if index is None else int(index),
            label=item.label,
            style=item.style,
        )

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        await guarded(interaction, self._answer(interaction))

    async def _answer(self, interaction: Interaction) -> None:
        needs = Reach.PUBLIC if self.action in POSTING else Reach.PRIVATE
        generation = await interaction.client.app.gallery.result(
            self.generation_id, self.index, viewer_of(interaction), needs
        )
        await ANSWERS[self.action](interaction, generation, self.index or 0)


async def _upscale(interaction: Interaction, generation: Generation, index: int) -> None:
    request = interaction.client.app.requests.upscale(generation, index)
    await think_in_public(interaction)
    await queue_job(interaction, request)


async def _tiled(
    interaction: Interaction, generation: Generation, index: int, action: Action
) -> None:
    factor, mode, _ = TILED[action]
    request = await interaction.client.app.requests.tiled_upscale(
        generation, index, factor, mode, interaction.guild_id
    )
    await think_in_public(interaction)
    await queue_job(interaction, request)


async def _vary(interaction: Interaction, generation: Generation, index: int) -> None:
    request = interaction.client.app.requests.vary(generation, index)
    await think_in_public(interaction)
    await queue_job(interaction, request)


async def _reroll(interaction: Interaction, generation: Generation, index: int) -> None:
    request = interaction.client.app.requests.reroll(generation)
    await think_in_public(interaction)
    await queue_job(interaction, request)


async def _edit(interaction: Interaction, generation: Generation, index: int) -> None:
    await interaction.response.send_modal(EditModal(generation))


async def _favourites(interaction: Interaction, generation: Generation, index: int) -> None:
    if len(generation.images) == 1:
        await _favourite(interaction, generation, 0)
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    chosen = await interaction.client.app.gallery.favourite_ids(interaction.user.id, generation)
    await interaction.followup.send(
        "Which images? Click to add or remove.",
        view=favourite_view(generation, chosen),
        ephemeral=True,
    )


async def _favourite(interaction: Interaction, generation: Generation, index: int) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    image = generation.images[index]
    added = await interaction.client.app.gallery.toggle_favourite(interaction.user.id, image)
    verb = "added to" if added else "removed from"
    await interaction.followup.send(
        f"Image {index + 1} (seed {image.seed}) {verb} your favourites.", ephemeral=True
    )


async def _info(interaction: Interaction, generation: Generation, index: int) -> None:
    """Privately (`Gallery.result` let the clicker see this result): the parameters, lineage,
    and each ControlNet unit with its map attached."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    app = interaction.client.app
    image = generation.images[0]
    lineage = await app.gallery.lineage(image)
    controls = await app.controls.shown(generation)
    seeds = [i.seed for i in generation.images]
    text = texts.info(generation.id, seeds, image.parameters, [a.id for a in lineage], controls)
    maps = [
        discord.File(shown.map_path, f"control-{shown.number}.png")
        for shown in controls
        if shown.map_path is not None
    ]
    await interaction.followup.send(
        text, files=maps, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
    )


async def _delete(interaction: Interaction, generation: Generation, index: int) -> None:
    gallery = interaction.client.app.gallery
    admin, viewer = is_admin(interaction), viewer_of(interaction)
    gallery.check_delete(generation, viewer, admin)
    await interaction.response.defer(ephemeral=True, thinking=True)
    await gallery.delete(generation, viewer, admin)
    if interaction.message is not None:
        try:
            await interaction.message.delete()
        except discord.HTTPException as error:
            log.warning("could not delete the message of generation %s: %s", generation.id, error)
    await interaction.followup.send("Deleted. The images stay in your /history.", ephemeral=True)


Answer = Callable[[Interaction, Generation, int], Awaitable[None]]
ANSWERS: dict[Action, Answer] = {
    Action.UPSCALE: _upscale,
    **{action: partial(_tiled, action=action) for action in TILED},
    Action.VARY: _vary,
    Action.REROLL: _reroll,
    Action.EDIT: _edit,
    Action.FAVOURITES: _favourites,
    Action.FAVOURITE: _favourite,
    Action.INFO: _info,
    Action.DELETE: _delete,
}


class EditModal(discord.ui.Modal):
    """Midjourney's Remix: change the prompt, keep the other parameters (model, clip skip and
    highres fix included)."""

    prompt: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
        label="Prompt", style=discord.TextStyle.paragraph, max_length=INPUT_VALUE
    )
    negative: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
        label="Negative prompt",
        style=discord.TextStyle.paragraph,
        max_length=INPUT_VALUE,
        required=False,
    )

    def __init__(self, generation: Generation) -> None:
        request = generation.request
        # A text input holds 4,000 characters: a longer prompt is cut, and the title says so.
        cut = max(len(request.prompt), len(request.negative)) > INPUT_VALUE
        title = "Edit (prompts cut to 4,000 characters)" if cut else "Edit and run again"
        super().__init__(title=title, custom_id=f"dc:edit:{generation.id}")
        self.generation = generation
        self.prompt.default = fit(request.prompt, INPUT_VALUE, marker="")
        self.negative.default = fit(request.negative, INPUT_VALUE, marker="")

    async def on_submit(self, interaction: Interaction) -> None:  # type: ignore[override]
        await think_in_public(interaction)
        request = await interaction.client.app.requests.compose(
            self.prompt.value,
            {"negative": self.negative.value},
            interaction.user.id,
            interaction.guild_id,
            base=self.generation.request,
        )
        await queue_job(interaction, request)

    async def on_error(self, interaction: Interaction, error: Exception, /) -> None:  # type: ignore[override]
        await answer_error(interaction, error)


TOOLS = (
    (Action.REROLL, "Reroll", "🔄"),
    (Action.EDIT, "Edit", "✏️"),
    (Action.FAVOURITES, "Favourite", "⭐"),
    (Action.INFO, "Info", "ℹ️"),
    (Action.DELETE, "Delete", "🗑️"),
)
PER_IMAGE_BUTTONS = (COMPONENTS - len(TOOLS)) // 2
"""Images that get a U and a V button: a message holds 25 buttons, the tools take five."""


def result_view(generation: Generation) -> discord.ui.View:
    """U1-U4 and V1-V4 (one pair per image, for the first ten), under an upscale the tiled
    upscales, then Reroll, Edit, Favourite, Info, Delete; under one image, the edit buttons
    too (rows 3 and 4)."""
    view = discord.ui.View(timeout=None)
    count = len(generation.images)
    for action in (Action.UPSCALE, Action.VARY):
        for index in range(min(count, PER_IMAGE_BUTTONS)):
            label = action.upper() + (str(index + 1) if count > 1 else "")
            view.add_item(ResultButton(action, generation.id, index, label=label))
    if generation.request.mode is Mode.UPSCALE:
        for action, (_, _, label) in TILED.items():
            view.add_item(ResultButton(action, generation.id, 0, label=label))
    for action, label, emoji in TOOLS:
        view.add_item(ResultButton(action, generation.id, label=label, emoji=emoji))
    if count == 1:
        for button in edit_buttons(generation):
            view.add_item(button)
    return view


def favourite_view(generation: Generation, favourite_ids: set[int]) -> discord.ui.View:
    """One toggle per image, filled when it is already a favourite of the clicking user."""
    view = discord.ui.View(timeout=None)
    for index, image in enumerate(generation.images):
        chosen = image.id in favourite_ids
        view.add_item(
            ResultButton(
                Action.FAVOURITE,
                generation.id,
                index,
                label=f"{'★' if chosen else '☆'} {index + 1}",
                style=discord.ButtonStyle.primary if chosen else discord.ButtonStyle.secondary,
            )
        )
    return view


RESULT_BUTTONS = (ResultButton, CancelButton, *EDIT_ITEMS)
"""Every persistent button of a result or a status message, for `add_dynamic_items`."""
