"""The model catalog (`App.catalog`): the configured checkpoints, and a server's default.

The models are what the settings configure (MODEL and every checkpoint in MODELS_DIR), read once
at start-up, as the engine reads them; a server's default model is `GuildSettings.model`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from bot.guild import Actor, GuildRules
from bot.models import companion_of, model_sources, upscaler_catalog
from bot.settings import Settings
from pipeline.errors import UserError

log = logging.getLogger(__name__)

CLEARING_WORDS = {"default", "none", "reset", "-"}


@dataclass(frozen=True)
class ModelInfo:
    """One configured model, as `/model list` shows it."""

    name: str
    description: str
    refusal: str | None = None
    """Why it cannot serve /imagine (inpainting checkpoints), or None."""


@dataclass(frozen=True)
class ModelCatalog:
    """The configured models by name, the bot's default (MODEL), and the upscalers."""

    settings: Settings
    guild: GuildRules
    models: tuple[ModelInfo, ...] = ()
    configured: str = ""
    """The bot's own default (MODEL)."""
    upscalers: tuple[str, ...] = field(default=())

    @classmethod
    async def load(cls, settings: Settings, guild: GuildRules) -> ModelCatalog:
        """Read the models off the event loop; a broken MODELS_DIR is logged, not fatal."""
        upscalers = tuple(upscaler_catalog(settings).names())
        try:
            sources, default = await asyncio.to_thread(model_sources, settings)
        except UserError as error:
            log.warning("could not list the configured models: %s", error)
            return cls(settings, guild, configured=settings.model, upscalers=upscalers)
        models = tuple(
            ModelInfo(name, source.description, source.txt2img_refusal)
            for name, source in sources.items()
        )
        return cls(settings, guild, models, default, upscalers)

    @property
    def names(self) -> list[str]:
        return [model.name for model in self.models]

    def known(self, name: str) -> str | None:
        """The configured model called `name` (any letter case), or None."""
        folded = name.strip().lower()
        return next((known for known in self.names if known.lower() == folded), None)

    def check(self, name: str) -> str:
        """`name` as configured and able to serve /imagine; a UserError saying why otherwise."""
        known = self.known(name)
        if known is None:
            raise UserError(f"there is no model {name!r}: use one of {', '.join(self.names)}")
        refusal = next(model.refusal for model in self.models if model.name == known)
        if refusal is not None:
            raise UserError(refusal)
        return known

    def companion_of(self, name: str) -> str | None:
        """The inpainting model edits on `name` use (its sidecar's or `<name>-inpainting`),
        or None: the edit runs on `name` itself. An inpainting model is its own companion."""
        known = self.known(name) or name
        if any(model.name == known and model.refusal for model in self.models):
            return None
        return companion_of(self.settings, known, self.names)

    def base_of(self, name: str) -> str:
        """The model whose edits run on `name` (`name` being its inpainting companion), for
        what starts from an edit's result (U, V, Edit); `name` itself when it is no one's."""
        for model in self.models:
            if model.name != name and not model.refusal and self.companion_of(model.name) == name:
                return model.name
        return name

    async def server_default(self, guild_id: int | None) -> str | None:
        """The server's default model, if it is still configured (else MODEL is used)."""
        chosen = (await self.guild.settings(guild_id)).model
        return self.known(chosen) if chosen else None

    async def set_server_default(self, actor: Actor, name: str) -> str | None:
        """Set the server's default (a clearing word: back to MODEL); the chosen name."""
        chosen = None if name.strip().lower() in CLEARING_WORDS else self.check(name)
        await self.guild.set_default_model(actor, chosen)
        return chosen
