"""Persistent buttons: `DynamicItem`s whose custom_id carries the action and the ids.

A click is answered from the database, so buttons work after a restart and long after the
interaction token is gone. Ids: `dc:<action>:<generation id>[:<image index>]` and
`dc:c:<job id>` for Cancel, well under Discord's 100 characters.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from cogs.errors import guarded

if TYPE_CHECKING:
    from bot.service import Generation

UPSCALE, VARY, REROLL, EDIT, FAVOURITES, FAVOURITE, INFO, DELETE = "uvreFfid"


class ResultButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"dc:(?P<action>[uvreFfid]):(?P<generation>[0-9]{1,18})(?::(?P<index>[0-9]{1,2}))?",
):
    """A button under a result; the Results cog does the work."""

    def __init__(
        self,
        action: str,
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
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> ResultButton:
        index = match["index"]
        return cls(
            match["action"],
            int(match["generation"]),
            None if index is None else int(index),
            label=item.label,
            style=item.style,
        )

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        cog = interaction.client.get_cog("Results")  # type: ignore[attr-defined]
        await guarded(
            interaction, cog.on_button(interaction, self.action, self.generation_id, self.index)
        )


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"dc:c:(?P<job>[0-9a-f]{32})"
):
    """Cancel a queued or running job (its requester or an admin)."""

    def __init__(self, job_id: str, label: str = "Cancel") -> None:
        super().__init__(
            discord.ui.Button(
                label=label, style=discord.ButtonStyle.danger, custom_id=f"dc:c:{job_id}"
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> CancelButton:
        return cls(match["job"], item.label or "Cancel")

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        cog = interaction.client.get_cog("Imagine")  # type: ignore[attr-defined]
        await guarded(interaction, cog.cancel_from_button(interaction, self.job_id))


def cancel_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(generation: Generation) -> discord.ui.View:
    """U1-U4 and V1-V4 (one pair per image), then Reroll, Edit, Favourite, Info, Delete."""
    view = discord.ui.View(timeout=None)
    count = len(generation.images)
    for action in (UPSCALE, VARY):
        for index in range(count):
            label = action.upper() + (str(index + 1) if count > 1 else "")
            view.add_item(ResultButton(action, generation.id, index, label=label))
    tools = (
        (REROLL, "Reroll", "🔄"),
        (EDIT, "Edit", "✏️"),
        (FAVOURITES, "Favourite", "⭐"),
        (INFO, "Info", "ℹ️"),
        (DELETE, "Delete", "🗑️"),
    )
    for action, label, emoji in tools:
        view.add_item(ResultButton(action, generation.id, label=label, emoji=emoji))
    return view


def favourite_view(generation: Generation, favourite_ids: set[int]) -> discord.ui.View:
    """One toggle per image, filled when it is already a favourite of the clicking user."""
    view = discord.ui.View(timeout=None)
    for index, image in enumerate(generation.images):
        chosen = image.id in favourite_ids
        view.add_item(
            ResultButton(
                FAVOURITE,
                generation.id,
                index,
                label=f"{'★' if chosen else '☆'} {index + 1}",
                style=discord.ButtonStyle.primary if chosen else discord.ButtonStyle.secondary,
            )
        )
    return view


RESULT_BUTTONS = (ResultButton, CancelButton)
