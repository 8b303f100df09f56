"""What differs between the LoRA, embedding, hypernetwork and ControlNet libraries, for any
front end.

The CLI prints a `LibraryKind`'s columns as a table and its details as `info` lines; Discord
shows the same values in embeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from data.registry import ControlNetEntry, EmbeddingEntry, HypernetworkEntry, LoraEntry

MIB = 1024**2


@dataclass(frozen=True)
class LibraryKind:
    """One library: its command and display names, download cap, and how entries show."""

    command: str
    what: str
    max_download_bytes: int
    columns: tuple[str, ...]
    row: Callable[[Any], tuple[str, ...]]
    """One `list` table row of an entry, in the order of `columns`."""
    details: Callable[[Any], list[tuple[str, str]]]
    """The `info` lines of an entry, besides the fields every entry has."""


def skipped_text(count: int) -> str:
    """How `info` and `check` say that some keys match no module of the model."""
    if not count:
        return "none"
    return f"{count} tensor keys that match no module of the model (left out)"


def _lora_row(entry: LoraEntry) -> tuple[str, ...]:
    rank = "-" if entry.rank is None else str(entry.rank)
    triggers = ", ".join(entry.triggers[:3]) + (" ..." if len(entry.triggers) > 3 else "")
    return (entry.name, entry.kind, rank, f"{entry.default_weight:g}", triggers or "-")


def _lora_details(entry: LoraEntry) -> list[tuple[str, str]]:
    return [
        ("kind", entry.kind + (" (DoRA)" if entry.dora else "")),
        ("rank", "-" if entry.rank is None else str(entry.rank)),
        ("alpha", "-" if entry.alpha is None else f"{entry.alpha:g}"),
        ("modules", str(entry.modules)),
        ("skipped", skipped_text(entry.skipped_keys)),
        ("bundled", ", ".join(entry.embeddings) or "-"),
        ("weight", f"{entry.default_weight:g}"),
        ("triggers", ", ".join(entry.triggers) or "-"),
    ]


LORAS = LibraryKind(
    command="lora",
    what="LoRA",
    max_download_bytes=2048 * MIB,
    columns=("NAME", "KIND", "RANK", "WEIGHT", "TRIGGERS"),
    row=_lora_row,
    details=_lora_details,
)


def _embedding_row(entry: EmbeddingEntry) -> tuple[str, ...]:
    return (entry.name, str(entry.vectors))


EMBEDDINGS = LibraryKind(
    command="embedding",
    what="embedding",
    max_download_bytes=50 * MIB,
    columns=("NAME", "VECTORS"),
    row=_embedding_row,
    details=lambda entry: [("vectors", str(entry.vectors))],
)


def structure_text(entry: HypernetworkEntry) -> str:
    """A1111's layer structure as its UI writes it: `1, 2, 1`."""
    return ", ".join(f"{factor:g}" for factor in entry.structure)


def _hypernetwork_row(entry: HypernetworkEntry) -> tuple[str, ...]:
    norm = " +norm" if entry.layer_norm else ""
    return (entry.name, structure_text(entry), entry.activation + norm)


def _hypernetwork_details(entry: HypernetworkEntry) -> list[tuple[str, str]]:
    return [
        ("widths", ", ".join(str(width) for width in entry.widths)),
        ("layers", structure_text(entry)),
        ("activation", entry.activation),
        ("layer norm", "yes" if entry.layer_norm else "no"),
    ]


HYPERNETWORKS = LibraryKind(
    command="hypernetwork",
    what="hypernetwork",
    max_download_bytes=1024 * MIB,
    columns=("NAME", "LAYERS", "ACTIVATION"),
    row=_hypernetwork_row,
    details=_hypernetwork_details,
)


def parameters_text(count: int) -> str:
    """A parameter count as model cards write it: `361M`."""
    return f"{count / 1e6:.0f}M" if count >= 1e6 else f"{count:,}"


def _controlnet_row(entry: ControlNetEntry) -> tuple[str, ...]:
    return (entry.name, entry.control_type, entry.layout)


def _controlnet_details(entry: ControlNetEntry) -> list[tuple[str, str]]:
    return [
        ("type", entry.control_type),
        ("layout", entry.layout),
        ("hint", f"{entry.hint_channels} channels"),
        ("parameters", parameters_text(entry.parameters)),
    ]


CONTROLNETS = LibraryKind(
    command="controlnet",
    what="ControlNet",
    max_download_bytes=1536 * MIB,
    columns=("NAME", "TYPE", "LAYOUT"),
    row=_controlnet_row,
    details=_controlnet_details,
)
"""1.5 GiB: a ControlNet 1.1 fp32 file is 1.45 GB, its fp16 conversion 723 MB."""
