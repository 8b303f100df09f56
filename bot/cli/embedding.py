"""`dreamcord embedding ...`: manage textual-inversion embeddings with the LoRA library's verbs."""

from __future__ import annotations

import argparse

from bot.cli.lora import add_library_commands
from bot.library_kinds import EMBEDDINGS


def register(subparsers: argparse._SubParsersAction) -> None:
    add_library_commands(subparsers, EMBEDDINGS)
