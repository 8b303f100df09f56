"""The Discord bot: a `commands.Bot` that opens the App and loads the cogs."""

from __future__ import annotations

import logging

import discord
import yarl
from discord.ext import commands

from bot.app import App
from bot.container import Services, open_services
from bot.heartbeat import Heartbeat, heartbeat_path, remove_heartbeat
from bot.previews import PreviewDelivery
from bot.settings import Settings
from cogs.account import Account
from cogs.admin import Admin
from cogs.buttons import RESULT_BUTTONS
from cogs.checks import DreamcordTree
from cogs.client import DreamcordClient
from cogs.editing import Editing
from cogs.errors import answer_error
from cogs.imagine import Imagine
from cogs.info import Info
from cogs.library.commands import (
    ControlNetCommands,
    EmbeddingCommands,
    HypernetworkCommands,
    LoraCommands,
)
from cogs.library.training import TrainCancelButton
from cogs.models import Models, Styles
from cogs.pages import PageButton
from cogs.presenter import DiscordPresenter
from pipeline.backend import Backend

log = logging.getLogger(__name__)


def point_discord_at(api_base: str | None, gateway_url: str | None) -> None:
    """Use another Discord-compatible server (tests, demos) instead of discord.com.

    discord.py reads both from class attributes, not from the client, so this is process-wide.
    """
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class DreamcordBot(DreamcordClient):
    """Slash commands only: the Guilds intent is all it needs, no privileged intents."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents(guilds=True),
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            tree_cls=DreamcordTree,
        )
        self.settings = settings
        self.presenter = DiscordPresenter(self)
        self._backend = backend
        self._services: Services | None = None
        self._heartbeat: Heartbeat | None = None

    @property
    def app(self) -> App:
        assert self._services is not None, "used before setup_hook"
        return self._services.app

    @property
    def services(self) -> Services:
        """Everything the composition root opened (tests read the repositories here)."""
        assert self._services is not None, "used before setup_hook"
        return self._services

    async def login(self, token: str) -> None:
        """Log in to the server the settings name (discord.com unless DISCORD_API_BASE says)."""
        point_discord_at(self.settings.discord_api_base, self.settings.discord_gateway_url)
        await super().login(token)

    async def setup_hook(self) -> None:
        """Open the App (database, jobs, worker), load the cogs, sync the commands."""
        # LoRA previews are collected and posted as one grid, not delivered job by job.
        for warning in self.settings.warnings():
            log.warning("%s", warning)
        delivery = PreviewDelivery(self.presenter)
        beat_file = heartbeat_path(self.settings.data_dir)
        remove_heartbeat(beat_file)  # the last run's, if it crashed: no verdict while we load
        self._services = await open_services(self.settings, delivery, backend=self._backend)
        self._heartbeat = Heartbeat(beat_file, self._services.app.jobs.worker.health)
        self._heartbeat.start()
        cog: commands.Cog
        for cog in (Imagine(self), Editing(self), Account(self), Info(self), Admin(self)):
            await self.add_cog(cog)
        for cog in (
            LoraCommands(self),
            EmbeddingCommands(self),
            HypernetworkCommands(self),
            ControlNetCommands(self),
        ):
            await self.add_cog(cog)
        for cog in (Models(self), Styles(self)):
            await self.add_cog(cog)
        self.add_dynamic_items(*RESULT_BUTTONS, PageButton, TrainCancelButton)
        self.tree.error(self._on_command_error)
        await self._sync_commands()

    async def _on_command_error(
        self, interaction: discord.Interaction, error: discord.app_commands.AppCommandError
    ) -> None:
        """Every slash-command error ends here: a user-fixable one is answered with its
        message, anything else is logged with its context and answered without details."""
        await answer_error(interaction, error)

    async def _sync_commands(self) -> None:
        if self.settings.discord_guilds:
            for guild_id in self.settings.discord_guilds:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                try:
                    await self.tree.sync(guild=guild)
                except discord.HTTPException as error:
                    # One mistyped id, or a server that removed the bot, must not stop the rest.
                    log.warning(
                        "could not register the commands in server %s from DISCORD_GUILDS (is "
                        "the bot in it?): %s",
                        guild_id,
                        error,
                    )
        else:
            await self.tree.sync()

    async def close(self) -> None:
        """Stop taking work, let the running batch stop between steps, close the database."""
        if self._heartbeat is not None:
            await self._heartbeat.stop()
            self._heartbeat = None
        if self._services is not None:
            await self._services.close()
            self._services = None
        await super().close()
