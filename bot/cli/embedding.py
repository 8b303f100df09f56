"""`dreamcord embedding ...`: manage textual-inversion embeddings with the LoRA library's verbs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from bot.cli.lora import MIB, LibraryCommand, add_library_commands
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.library import Library
    from data.registry import EmbeddingEntry
    from data.repositories import Repositories


def _build(repos: Repositories, settings: Settings) -> Library[Any]:
    from bot.library import EmbeddingLibrary, text_width

    return EmbeddingLibrary(repos.embeddings, settings.data_dir, text_width(settings.model))


def _row(entry: EmbeddingEntry) -> tuple[str, ...]:
    return (entry.name, str(entry.vectors))


EMBEDDINGS = LibraryCommand(
    command="embedding",
    what="embedding",
    max_download_bytes=50 * MIB,
    build=_build,
    columns=("NAME", "VECTORS"),
    row=_row,
    details=lambda entry: [("vectors", str(entry.vectors))],
)


def register(subparsers: argparse._SubParsersAction) -> None:
    add_library_commands(subparsers, EMBEDDINGS)
