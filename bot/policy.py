"""Server policy set by admins: where the bot works, what it refuses, how much one may ask.

The rules are fields of `bot.guild.GuildSettings`; `JobService.submit` checks them for every job
that a person asks for, before it is queued. NSFW words are found by `bot.banned_words` in the
positive prompt, the names of the LoRAs and hypernetworks it uses and those LoRAs' trigger
words (the negative prompt may name anything). DMs follow DM_POLICY: refused (off, the default),
or checked against the home server's rules, as an SFW or an NSFW channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bot.banned_words import find_banned
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


DmPolicy = Literal["off", "sfw", "nsfw"]
DMS_OFF = (
    "this bot does not make images in direct messages: use /imagine in a server it is in "
    "(its owner can allow DMs with DM_POLICY)"
)


def no_triggers(name: str) -> Sequence[str]:
    """Trigger words when no LoRA library is attached (tests, tools): none."""
    return ()


class Policy:
    """Checks a request against its guild's policy; admins skip the cooldown only.

    `lora_triggers` gives a LoRA's trigger words by name (the LoRA library knows them);
    `home_guild` is the server whose rules DMs follow.
    """

    def __init__(
        self,
        guild: GuildRules,
        clock: Any = time.monotonic,
        *,
        lora_triggers: Callable[[str], Sequence[str]] = no_triggers,
        dm_policy: DmPolicy = "off",
        home_guild: int | None = None,
    ) -> None:
        self._guild = guild
        self._clock = clock
        self._triggers = lora_triggers
        self._dm_policy = dm_policy
        self._home_guild = home_guild
        self._last_job: dict[tuple[int, int], float] = {}

    async def check(self, place: Place, request: GenerationRequest) -> None:
        in_dm = place.guild_id is None
        if in_dm and self._dm_policy == "off":
            raise UserError(DMS_OFF)
        rules_of = self._home_guild if in_dm else place.guild_id
        if rules_of is None:
            return
        policy = await self._guild.settings(rules_of)
        channels = policy.channels
        if channels and not in_dm and place.channel_id not in channels:
            listed = ", ".join(f"<#{channel}>" for channel in channels)
            raise UserError(f"the bot works only in {listed} on this server: ask there")
        if not place.channel_is_nsfw:
            found = find_banned(self._texts_of(request), policy.nsfw_words)
            if found:
                raise UserError(
                    f"{', '.join(found)} is not allowed outside NSFW channels: change the prompt "
                    "(LoRA names and trigger words count too) or use an NSFW channel"
                )
        _check_limit("steps", request.steps, policy.max_steps)
        _check_limit("images", request.count, policy.max_count)
        _check_limit("pixels", request.width * request.height, policy.max_pixels)
        self._check_cooldown(place, rules_of, policy.cooldown_s)

    def _texts_of(self, request: GenerationRequest) -> list[str]:
        """What NSFW words are looked for in: never the negative prompt."""
        texts = [request.prompt]
        for lora in request.loras:
            texts.append(lora.name)
            texts.extend(self._triggers(lora.name))
        texts.extend(hypernet.name for hypernet in request.hypernets)
        return texts

    def _check_cooldown(self, place: Place, guild_id: int, cooldown: Any) -> None:
        if not cooldown or place.is_admin:
            return
        key = (guild_id, place.user_id)
        now = self._clock()
        wait = self._last_job.get(key, -float("inf")) + float(cooldown) - now
        if wait > 0:
            raise UserError(f"this server has a cooldown: try again in {wait:.0f} s")
        self._last_job[key] = now


def _check_limit(what: str, value: int, limit: Any) -> None:
    if limit is not None and value > int(limit):
        raise UserError(f"this server allows at most {limit} {what} per request: ask for fewer")
