"""`dreamcord run`: start the Discord bot."""

from __future__ import annotations

import argparse

from bot.settings import Settings
from pipeline.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="start the Discord bot (needs DISCORD_TOKEN)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.discord_token is None:
        raise UserError("DISCORD_TOKEN is not set: put your bot token in .env (see .env.example)")
    raise UserError("the Discord bot is not wired yet: use `dreamcord generate` meanwhile")
