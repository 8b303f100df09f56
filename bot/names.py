"""Known LoRA, embedding and hypernetwork names, read without I/O so a prompt is checked at once.

`/imagine` must answer within 3 seconds, so the prompt is parsed before anything touches the
database; the libraries keep their names in memory and refresh them on every change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.lora.source import FileSource


class KnownNames:
    """The enabled names of the libraries attached at start-up (none before that)."""

    def __init__(self) -> None:
        self._loras: FileSource | None = None
        self._embeddings: FileSource | None = None
        self._hypernets: FileSource | None = None

    def attach(
        self, loras: FileSource, embeddings: FileSource, hypernets: FileSource | None = None
    ) -> None:
        self._loras, self._embeddings, self._hypernets = loras, embeddings, hypernets

    @property
    def loras(self) -> frozenset[str]:
        return frozenset(self._loras.names()) if self._loras else frozenset()

    @property
    def embeddings(self) -> frozenset[str]:
        return frozenset(self._embeddings.names()) if self._embeddings else frozenset()

    @property
    def hypernets(self) -> frozenset[str]:
        return frozenset(self._hypernets.names()) if self._hypernets else frozenset()
