"""What a flagged image gets where it is posted (`App.safety`): allowed, spoilered or withheld.

The engine's safety checker gives every image a verdict, kept with its row. Where it is posted
decides the rest: in an NSFW channel every image is allowed; elsewhere (other channels and DMs)
the server's mode applies, `SAFETY_CHECKER` unless the server chose its own with `/policy set`:
`spoiler` sends the result as a Discord spoiler, `block` leaves flagged images out with a note.
The same rule runs for a new result, every later `/show` and every published list, so a flagged
image is never shown as it is outside NSFW channels, wherever it was made. A withheld image is
not lost: its owner's private `/history` shows it, and `/show` posts it in an NSFW channel.
Live previews, which no checker has seen, are shown only where a flagged image would be as it
is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bot.guild import GuildRules


class Checked(Protocol):
    """An image with the safety checker's verdict (None: no checker ran)."""

    @property
    def flagged(self) -> bool | None: ...


class SafetyMode(StrEnum):
    """What a flagged image gets outside NSFW channels."""

    OFF = "off"
    SPOILER = "spoiler"
    BLOCK = "block"


@dataclass(frozen=True)
class Screening:
    """Which images of a result may be posted in one place, and whether as a spoiler."""

    shown: tuple[int, ...]
    """Indexes of the images to post, in order."""
    spoiler: bool = False
    withheld: int = 0

    @property
    def note(self) -> str | None:
        """The line that tells the channel what the safety checker did, if anything."""
        if self.withheld:
            were = "image was" if self.withheld == 1 else "images were"
            return f"{self.withheld} {were} withheld by the safety checker"
        if self.spoiler:
            return "marked as a spoiler by the safety checker"
        return None


def screen(images: Sequence[Checked], mode: SafetyMode, channel_is_nsfw: bool) -> Screening:
    """The screening of `images` for a channel, under `mode` (the rule in the module docstring)."""
    every = tuple(range(len(images)))
    flagged = {index for index, image in enumerate(images) if image.flagged}
    if not flagged or channel_is_nsfw or mode is SafetyMode.OFF:
        return Screening(every)
    if mode is SafetyMode.SPOILER:
        return Screening(every, spoiler=True)
    return Screening(tuple(i for i in every if i not in flagged), withheld=len(flagged))


class SafetyRules:
    """The deployment's mode (`SAFETY_CHECKER`), a server's own choice over it, and screening."""

    def __init__(self, guild: GuildRules, default: SafetyMode) -> None:
        self._guild = guild
        self.default = default

    async def mode(self, guild_id: int | None) -> SafetyMode:
        """The mode where `guild_id` posts (None, a DM: the deployment's)."""
        chosen = (await self._guild.settings(guild_id)).safety
        return SafetyMode(chosen) if chosen else self.default

    async def screen(
        self, images: Sequence[Checked], guild_id: int | None, channel_is_nsfw: bool
    ) -> Screening:
        """What of `images` may be posted in this guild's channel."""
        return screen(images, await self.mode(guild_id), channel_is_nsfw)

    async def shows_as_is(self, guild_id: int | None, channel_is_nsfw: bool) -> bool:
        """Whether a flagged image is shown as it is here. Where it is not, no image the
        checker has not seen (a live preview) is shown either, and no flagged thumbnail."""
        return channel_is_nsfw or await self.mode(guild_id) is SafetyMode.OFF
