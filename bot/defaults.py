"""A user's saved defaults for /imagine (`App.defaults`): checked like a request, stored, shown.

The saved values are one layer of `bot.requests.build_request`: under explicit options and
prompt flags, over the model's, the server's and `.env`'s defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.guild import GuildRules
from bot.models import upscaler_catalog
from bot.requests import HIRES_FIELDS, settings_defaults
from bot.settings import Settings
from data.settings import SettingsRepository
from pipeline.errors import UserError
from pipeline.limits import MAX_CLIP_SKIP, MAX_HIRES_SCALE, MIN_HIRES_SCALE
from pipeline.request import HiresSpec
from pipeline.samplers import AUTOMATIC, find_sampler, find_schedule
from pipeline.sizes import parse_size

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


@dataclass(frozen=True)
class SavedDefaults:
    """What `/settings` shows: whether something changed, and each default with its origin."""

    changed: bool
    rows: list[tuple[str, str, str]]


class UserDefaults:
    """Reads and saves a user's defaults."""

    def __init__(self, repo: SettingsRepository, guild: GuildRules, settings: Settings) -> None:
        self._repo = repo
        self._guild = guild
        self._settings = settings

    async def saved(self, user_id: int) -> dict[str, Any]:
        return await self._repo.user(user_id)

    async def save(
        self, user_id: int, guild_id: int | None, given: Mapping[str, Any], reset: bool = False
    ) -> SavedDefaults:
        """Check `given` (None: unchanged), forget the old ones first if `reset`, then save."""
        try:
            changes = checked_defaults(given, self._settings)
        except UserError as error:
            raise UserError(f"{error}. Nothing was saved.") from None
        if reset:
            await self._repo.set_user(user_id, dict.fromkeys(DEFAULT_KEYS))
        if changes:
            await self._repo.set_user(user_id, changes)
        user = await self._repo.user(user_id)
        server = (await self._guild.settings(guild_id)).request_layer()
        changed = reset or any(value is not None for value in given.values())
        return SavedDefaults(changed, effective_defaults(user, server, self._settings))
