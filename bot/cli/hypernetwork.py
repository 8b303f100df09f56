"""`dreamcord hypernetwork ...`: manage A1111-style hypernetworks with the LoRA library's verbs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from bot.cli.lora import MIB, LibraryCommand, add_library_commands
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.library import Library
    from data.registry import HypernetworkEntry
    from data.repositories import Repositories


def _build(repos: Repositories, settings: Settings) -> Library[Any]:
    from bot.library import HypernetworkLibrary, attention_widths, text_width

    return HypernetworkLibrary(
        repos.hypernetworks,
        settings.data_dir,
        text_width(settings.model),
        attention_widths(settings.model),
    )


def structure_text(entry: HypernetworkEntry) -> str:
    """A1111's layer structure as its UI writes it: `1, 2, 1`."""
    return ", ".join(f"{factor:g}" for factor in entry.structure)


def _row(entry: HypernetworkEntry) -> tuple[str, ...]:
    norm = " +norm" if entry.layer_norm else ""
    return (entry.name, structure_text(entry), entry.activation + norm)


def _details(entry: HypernetworkEntry) -> list[tuple[str, str]]:
    return [
        ("widths", ", ".join(str(width) for width in entry.widths)),
        ("layers", structure_text(entry)),
        ("activation", entry.activation),
        ("layer norm", "yes" if entry.layer_norm else "no"),
    ]


HYPERNETWORKS = LibraryCommand(
    command="hypernetwork",
    what="hypernetwork",
    max_download_bytes=1024 * MIB,
    build=_build,
    columns=("NAME", "LAYERS", "ACTIVATION"),
    row=_row,
    details=_details,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    add_library_commands(subparsers, HYPERNETWORKS)
