"""Server policy set by admins: where the bot works, what it refuses, how much one may ask.

The rules are fields of `bot.guild.GuildSettings`; `JobService.submit` checks them for every job
that a person asks for, before it is queued.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError
from pipeline.request import GenerationRequest

if TYPE_CHECKING:
    from bot.guild import GuildRules


@dataclass(frozen=True)
class Place:
    """Where a request comes from, as far as policy cares."""

    guild_id: int | None
    channel_id: int | None
    channel_is_nsfw: bool
    user_id: int
    is_admin: bool = False


class Policy:
    """Checks a request against its guild's policy; admins skip the cooldown only."""

    def __init__(self, guild: GuildRules, clock: Any = time.monotonic) -> None:
        self._guild = guild
        self._clock = clock
        self._last_job: dict[tuple[int, int], float] = {}

    async def check(self, place: Place, request: GenerationRequest) -> None:
        if place.guild_id is None:
            return
        policy = await self._guild.settings(place.guild_id)
        channels = policy.channels
        if channels and place.channel_id not in channels:
            listed = ", ".join(f"<#{channel}>" for channel in channels)
            raise UserError(f"the bot works only in {listed} on this server: ask there")
        if not place.channel_is_nsfw:
            words = policy.nsfw_words
            text = f"{request.prompt} ".lower()
            found = [word for word in words if re.search(rf"\b{re.escape(word)}\b", text)]
            if found:
                raise UserError(
                    f"{', '.join(found)} is not allowed outside NSFW channels: change the prompt "
                    "or use an NSFW channel"
                )
        _check_limit("steps", request.steps, policy.max_steps)
        _check_limit("images", request.count, policy.max_count)
        _check_limit("pixels", request.width * request.height, policy.max_pixels)
        self._check_cooldown(place, policy.cooldown_s)

    def _check_cooldown(self, place: Place, cooldown: Any) -> None:
        if not cooldown or place.is_admin or place.guild_id is None:
            return
        key = (place.guild_id, place.user_id)
        now = self._clock()
        wait = self._last_job.get(key, -float("inf")) + float(cooldown) - now
        if wait > 0:
            raise UserError(f"this server has a cooldown: try again in {wait:.0f} s")
        self._last_job[key] = now


def _check_limit(what: str, value: int, limit: Any) -> None:
    if limit is not None and value > int(limit):
        raise UserError(f"this server allows at most {limit} {what} per request: ask for fewer")
