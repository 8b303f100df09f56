"""The Discord bot: a `commands.Bot` that owns the services and loads the cogs."""

from __future__ import annotations

import logging

import discord
import yarl
from discord.ext import commands

from bot.container import Services, open_services
from bot.names import KnownNames
from bot.policy import Policy
from bot.service import GenerationService
from bot.settings import Settings
from cogs.buttons import RESULT_BUTTONS
from cogs.imagine import Imagine
from cogs.presenter import DiscordPresenter
from cogs.results import Results
from pipeline.backend import Backend

log = logging.getLogger(__name__)


def point_discord_at(api_base: str | None, gateway_url: str | None) -> None:
    """Use another Discord-compatible server (tests, demos) instead of discord.com."""
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class DreamcordBot(commands.Bot):
    """Slash commands only: the Guilds intent is all it needs, no privileged intents."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents(guilds=True),
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.settings = settings
        self.names = KnownNames()
        self.presenter = DiscordPresenter(self)
        self._backend = backend
        self._services: Services | None = None
        self.policy: Policy

    @property
    def service(self) -> GenerationService:
        assert self._services is not None, "used before setup_hook"
        return self._services.generation

    async def setup_hook(self) -> None:
        """Open the database, recover jobs, start the worker, load cogs, sync commands."""
        self._services = await open_services(self.settings, self.presenter, backend=self._backend)
        repos = self._services.repos
        self.policy = Policy(repos.settings)
        self.names.attach(self._services.loras, self._services.embeddings)
        for cog in (Imagine(self), Results(self)):
            await self.add_cog(cog)
        self.add_dynamic_items(*RESULT_BUTTONS)
        await self._sync_commands()

    async def _sync_commands(self) -> None:
        if self.settings.discord_guilds:
            for guild_id in self.settings.discord_guilds:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    async def close(self) -> None:
        """Stop taking work, let the running batch stop between steps, close the database."""
        if self._services is not None:
            await self._services.close()
            self._services = None
        await super().close()
