"""Known LoRA and embedding names, kept in memory so a prompt is checked without any I/O.

`/imagine` must answer within 3 seconds, so the prompt is parsed before anything touches the
database; the registry refreshes this cache whenever it changes.
"""

from __future__ import annotations

from data.repositories import Repositories


class KnownNames:
    def __init__(self) -> None:
        self.loras: frozenset[str] = frozenset()
        self.embeddings: frozenset[str] = frozenset()

    async def refresh(self, repos: Repositories) -> None:
        self.loras = frozenset(await repos.loras.names())
        self.embeddings = frozenset(await repos.embeddings.names())
