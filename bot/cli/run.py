"""`dreamcord run`: start the Discord bot, and stop it gracefully on SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from bot.settings import Settings
from pipeline.errors import UserError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="start the Discord bot (needs DISCORD_TOKEN)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.discord_token is None:
        raise UserError("DISCORD_TOKEN is not set: put your bot token in .env (see .env.example)")
    asyncio.run(serve(settings, settings.discord_token.get_secret_value()))
    return 0


async def serve(settings: Settings, token: str) -> None:
    """Run until Discord closes or a stop signal arrives; then stop intake, let the running
    batch stop between steps (its images go back to the queue), and close the database."""
    import discord

    from bot.discord_bot import DreamcordBot

    bot = DreamcordBot(settings)
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop_signal, lambda: loop.create_task(_stop(bot)))
    try:
        async with bot:
            await bot.start(token)
    except discord.LoginFailure:
        raise UserError("Discord refused DISCORD_TOKEN: copy the bot token again") from None
    except discord.PrivilegedIntentsRequired:
        raise UserError("Discord asks for privileged intents; Dreamcord needs none") from None


async def _stop(bot: object) -> None:
    log.info("stop signal received: finishing up")
    await bot.close()  # type: ignore[attr-defined]
