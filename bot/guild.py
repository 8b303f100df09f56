"""A server's settings, typed: its rules, default negative, default model and styles.

Every key a guild may store is declared once, with its default, in `GuildSettings`; the
`GuildRules` service reads and changes them, and writes each change to the audit log, so the
cogs never see the storage's keys or its repositories.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bot.followups import TiledUpscale
from bot.safety import SafetyMode
from bot.styles import Style, find_style, make_style, with_style, without_style
from data.audit import AuditRepository
from data.settings import SettingsRepository
from pipeline.errors import UserError
from pipeline.limits import check_tile_spec
from pipeline.request import TileSpec
from pipeline.sizes import parse_size

CLEARING_WORDS = {"", "none", "off", "-"}
MAX_NSFW_WORDS = 200


@dataclass(frozen=True)
class GuildSettings:
    """Every guild setting and its default; a field left at its default is not stored."""

    channels: tuple[int, ...] = ()
    """Where the bot works; empty: every channel."""
    nsfw_words: tuple[str, ...] = ()
    """Words refused outside NSFW channels."""
    max_steps: int | None = None
    max_count: int | None = None
    max_pixels: int | None = None
    cooldown_s: int | None = None
    negative: str | None = None
    """The server's default negative prompt (under a user's own)."""
    model: str | None = None
    """The server's default model, a name from the model catalog."""
    styles: Mapping[str, Style] = field(default_factory=dict)
    """Style presets by lower-cased name."""
    safety: str | None = None
    """What flagged images get outside NSFW channels (`bot.safety.SafetyMode`); None: the
    deployment's SAFETY_CHECKER."""
    upscale_steps: int | None = None
    upscale_subtle: float | None = None
    upscale_creative: float | None = None
    upscale_tile: int | None = None
    """The tiled upscale buttons' steps, Subtle and Creative denoise, and tile side; None:
    `TiledUpscale`'s defaults."""
    training: str | None = None
    """The server's training switch: None is on, "paused" holds its runs between steps."""
    training_roles: tuple[int, ...] = ()
    """Roles whose members may train LoRAs (/lora train), besides the server's admins."""
    training_max_steps: int | None = None
    """Most steps of one run on this server; None: the bot's TRAINING_MAX_STEPS."""

    @classmethod
    def from_stored(cls, raw: Mapping[str, Any]) -> GuildSettings:
        styles = {key: Style.from_json(value) for key, value in (raw.get("styles") or {}).items()}
        return cls(
            channels=tuple(int(channel) for channel in raw.get("channels") or ()),
            nsfw_words=tuple(str(word).lower() for word in raw.get("nsfw_words") or ()),
            max_steps=raw.get("max_steps"),
            max_count=raw.get("max_count"),
            max_pixels=raw.get("max_pixels"),
            cooldown_s=raw.get("cooldown_s"),
            negative=raw.get("negative"),
            model=raw.get("model"),
            styles=styles,
            safety=raw.get("safety"),
            upscale_steps=raw.get("upscale_steps"),
            upscale_subtle=raw.get("upscale_subtle"),
            upscale_creative=raw.get("upscale_creative"),
            upscale_tile=raw.get("upscale_tile"),
            training=raw.get("training"),
            training_roles=tuple(int(role) for role in raw.get("training_roles") or ()),
            training_max_steps=raw.get("training_max_steps"),
        )

    def stored(self, name: str) -> Any:
        """One field as it is stored (None: the default, so the key is removed)."""
        value = getattr(self, name)
        if name == "styles":
            return {key: style.to_json() for key, style in value.items()} or None
        if isinstance(value, tuple):
            return list(value) or None
        return value

    def tiled_upscale(self) -> TiledUpscale:
        """What the tiled upscale buttons run with on this server."""
        default = TiledUpscale()  # stored values are never 0 (`policy_changes` checks)
        return TiledUpscale(
            steps=self.upscale_steps or default.steps,
            subtle=self.upscale_subtle or default.subtle,
            creative=self.upscale_creative or default.creative,
            tile=self.upscale_tile or default.tile,
        )

    def request_layer(self) -> dict[str, Any]:
        """The request defaults this server sets, as `bot.requests.build_request` reads them."""
        layer = {"negative": self.negative, "model": self.model}
        return {key: value for key, value in layer.items() if value is not None}


def parse_words(text: str) -> tuple[str, ...]:
    """A comma-separated word list, lower-cased and de-duplicated; empty clears it."""
    if text.strip().lower() in CLEARING_WORDS:
        return ()
    words: list[str] = []
    for word in text.split(","):
        word = " ".join(word.split()).lower()
        if word and word not in words:
            words.append(word)
    if len(words) > MAX_NSFW_WORDS:
        raise UserError(f"that is {len(words)} words; keep the list to {MAX_NSFW_WORDS}")
    return tuple(words)


def policy_changes(
    current: GuildSettings,
    *,
    add_channel: int | None = None,
    remove_channel: int | None = None,
    nsfw_words: str | None = None,
    max_steps: int | None = None,
    max_size: str | None = None,
    max_count: int | None = None,
    cooldown: int | None = None,
    default_negative: str | None = None,
    safety: str | None = None,
    upscale_steps: int | None = None,
    upscale_subtle: float | None = None,
    upscale_creative: float | None = None,
    upscale_tile: int | None = None,
    training: str | None = None,
    add_training_role: int | None = None,
    remove_training_role: int | None = None,
    training_max_steps: int | None = None,
    max_pixels_limit: int,
    max_steps_limit: int = 150,
    checker_loaded: bool = False,
    training_steps_limit: int = 50_000,
) -> dict[str, Any]:
    """The fields to change for these `/policy set` options (None: back to the default)."""
    changes: dict[str, Any] = {}
    channels = list(current.channels)
    if add_channel is not None and add_channel not in channels:
        channels.append(add_channel)
    if remove_channel is not None and remove_channel in channels:
        channels.remove(remove_channel)
    if add_channel is not None or remove_channel is not None:
        changes["channels"] = tuple(channels)
    if nsfw_words is not None:
        changes["nsfw_words"] = parse_words(nsfw_words)
    if max_steps is not None:
        changes["max_steps"] = max_steps
    if max_size is not None:
        width, height = parse_size(max_size, max_pixels_limit)
        changes["max_pixels"] = width * height
    if max_count is not None:
        changes["max_count"] = max_count
    if cooldown is not None:
        changes["cooldown_s"] = cooldown or None
    if default_negative is not None:
        text = default_negative.strip()
        changes["negative"] = None if text.lower() in CLEARING_WORDS else text
    if safety is not None:
        changes["safety"] = safety_choice(safety, checker_loaded)
    if upscale_steps is not None:
        if not 1 <= upscale_steps <= max_steps_limit:
            raise UserError(
                f"upscale_steps {upscale_steps} is out of range: use 1 to {max_steps_limit}"
            )
        changes["upscale_steps"] = upscale_steps
    denoises = {"upscale_subtle": upscale_subtle, "upscale_creative": upscale_creative}
    for name, denoise in denoises.items():
        if denoise is not None:
            if not 0 < denoise <= 1:
                raise UserError(f"{name} {denoise:g} is out of range: use more than 0, up to 1")
            changes[name] = denoise
    if upscale_tile is not None:
        check_tile_spec(TileSpec(upscale_tile))
        changes["upscale_tile"] = upscale_tile
    changes |= training_changes(
        current, training, add_training_role, remove_training_role, training_max_steps,
        training_steps_limit,
    )  # fmt: skip
    return changes


TRAINING_SWITCH = ("on", "paused")


def training_changes(
    current: GuildSettings,
    switch: str | None,
    add_role: int | None,
    remove_role: int | None,
    max_steps: int | None,
    steps_limit: int,
) -> dict[str, Any]:
    """The training fields of a `/policy set` (the switch, who may train, the step cap)."""
    changes: dict[str, Any] = {}
    if switch is not None:
        if switch not in TRAINING_SWITCH:
            raise UserError(f"training is {switch!r}: choose on or paused")
        changes["training"] = None if switch == "on" else switch
    roles = list(current.training_roles)
    if add_role is not None and add_role not in roles:
        roles.append(add_role)
    if remove_role is not None and remove_role in roles:
        roles.remove(remove_role)
    if add_role is not None or remove_role is not None:
        changes["training_roles"] = tuple(roles)
    if max_steps is not None:
        if not 1 <= max_steps <= steps_limit:
            raise UserError(
                f"training_max_steps {max_steps} is out of range: use 1 to {steps_limit} "
                "(the bot's TRAINING_MAX_STEPS)"
            )
        changes["training_max_steps"] = max_steps
    return changes


SAFETY_DEFAULT = "default"
"""The `/policy set safety` choice that goes back to the deployment's SAFETY_CHECKER."""


def safety_choice(choice: str, checker_loaded: bool) -> str | None:
    """A server's safety mode from `/policy set safety` (None: the deployment's)."""
    if choice == SAFETY_DEFAULT:
        return None
    if choice not in {mode.value for mode in SafetyMode}:
        raise UserError(f"safety is {choice!r}: choose off, spoiler, block or default")
    if not checker_loaded and choice != SafetyMode.OFF:
        raise UserError(
            "the safety checker is not running on this bot, so there are no verdicts to act on: "
            "its owner turns it on with SAFETY_CHECKER=spoiler or block"
        )
    return choice


@dataclass(frozen=True)
class Actor:
    """Who makes a change, for the audit log (the CLI has neither id)."""

    guild_id: int | None
    user_id: int | None


class GuildRules:
    """Reads a server's settings and changes them, one audit entry per changed field."""

    def __init__(
        self,
        settings: SettingsRepository,
        audit: AuditRepository,
        max_pixels: int,
        max_steps: int,
        checker_loaded: bool = False,
        training_steps_limit: int = 50_000,
    ) -> None:
        self._settings = settings
        self._audit = audit
        self._max_pixels = max_pixels
        self._max_steps = max_steps
        self._checker_loaded = checker_loaded
        self._training_steps_limit = training_steps_limit

    async def settings(self, guild_id: int | None) -> GuildSettings:
        """A guild's settings; outside a guild (DMs, the CLI), the defaults."""
        if guild_id is None:
            return GuildSettings()
        return GuildSettings.from_stored(await self._settings.guild(guild_id))

    async def set_policy(self, actor: Actor, action: str, **options: Any) -> GuildSettings:
        """Apply `/policy set` options; a UserError when none was given."""
        current = await self._require(actor)
        changes = policy_changes(
            current,
            max_pixels_limit=self._max_pixels,
            max_steps_limit=self._max_steps,
            checker_loaded=self._checker_loaded,
            training_steps_limit=self._training_steps_limit,
            **options,
        )
        if not changes:
            raise UserError("give at least one option to change, or use /policy show")
        return await self._change(actor, action, current, changes)

    async def reset_rules(self, actor: Actor, names: tuple[str, ...]) -> GuildSettings:
        """Put these rules back to their defaults."""
        current = await self._require(actor)
        changes = {name: getattr(GuildSettings(), name) for name in names}
        return await self._change(actor, "policy.reset", current, changes)

    async def set_default_model(self, actor: Actor, model: str | None) -> None:
        """Set (or with None clear) the server's default model; audited even when unchanged."""
        current = await self._require(actor)
        assert actor.guild_id is not None
        await self._settings.set_guild(actor.guild_id, {"model": model})
        await self._audit.record(
            "model.default",
            guild_id=actor.guild_id,
            user_id=actor.user_id,
            target=model,
            detail={"from": current.model, "to": model},
        )

    async def add_style(self, actor: Actor, **options: Any) -> tuple[Style, bool]:
        """Add or replace a style checked as `bot.styles.make_style` does; (style, replaced)."""
        current = await self._require(actor)
        style = make_style(**options, max_pixels=self._max_pixels, max_steps=self._max_steps)
        replaced = style.name.lower() in current.styles
        await self._write_styles(actor, with_style(current.styles, style))
        await self._record(actor, "style.update" if replaced else "style.add", style)
        return style, replaced

    async def remove_style(self, actor: Actor, name: str) -> Style:
        current = await self._require(actor)
        style = find_style(current.styles, name)
        await self._write_styles(actor, without_style(current.styles, name))
        await self._record(actor, "style.remove", style)
        return style

    async def _require(self, actor: Actor) -> GuildSettings:
        if actor.guild_id is None:
            raise UserError("this is a server setting: use the command in a server")
        return await self.settings(actor.guild_id)

    async def _write_styles(self, actor: Actor, styles: Mapping[str, Style]) -> None:
        assert actor.guild_id is not None
        stored = GuildSettings(styles=styles).stored("styles")
        await self._settings.set_guild(actor.guild_id, {"styles": stored})

    async def _record(self, actor: Actor, action: str, style: Style) -> None:
        await self._audit.record(
            action,
            guild_id=actor.guild_id,
            user_id=actor.user_id,
            target=style.name,
            detail=style.to_json(),
        )

    async def _change(
        self,
        actor: Actor,
        action: str,
        current: GuildSettings,
        changes: Mapping[str, Any],
    ) -> GuildSettings:
        """Write `changes` (field: value) and audit each field whose stored value changed."""
        assert actor.guild_id is not None
        updated = replace(current, **changes)
        stored = {name: updated.stored(name) for name in changes}
        await self._settings.set_guild(actor.guild_id, stored)
        for name, value in stored.items():
            before = current.stored(name)
            if before != value:
                await self._audit.record(
                    action,
                    guild_id=actor.guild_id,
                    user_id=actor.user_id,
                    target=name,
                    detail={"from": before, "to": value},
                )
        return updated
