"""Where the engine finds LoRA, embedding and hypernetwork files by name, and their contents.

The app's library (files under DATA_DIR, names in SQLite) implements `FileSource`; the engine sees
only names, paths and hashes, so it stays free of storage. Parsed adapters come from the bounded
`AdapterCache`, hypernetworks too; embedding vectors are a few KB each and are kept by sha256
for the process's life.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.errors import UserError
from pipeline.hashes import addnet_hash
from pipeline.lora.cache import AdapterCache
from pipeline.lora.embeddings import load_embedding
from pipeline.lora.hypernetwork import HypernetUse, Hypernetwork, load_hypernetwork
from pipeline.lora.patcher import LoraUse
from pipeline.prompt.embeddings import find_embeddings
from pipeline.request import HypernetRef, LoraRef

if TYPE_CHECKING:
    import torch

HASH_DIGITS = 12
"""A1111 writes `Lora hashes` with the first 12 hex digits of the file's addnet hash."""


class FileSource(Protocol):
    """Registered files by name: the app's library, or a dict-backed fake in tests."""

    def names(self) -> Collection[str]:
        """The enabled names, as spelled for display."""
        ...

    def resolve(self, name: str) -> tuple[Path, str]:
        """(path, sha256) of an enabled entry; UserError for an unknown or disabled name."""
        ...


class AdapterSource:
    """The LoRAs and hypernetworks of a request and the embeddings of a prompt, for the engine."""

    def __init__(
        self,
        loras: FileSource,
        embeddings: FileSource,
        cache: AdapterCache,
        hypernetworks: FileSource | None = None,
    ) -> None:
        self.lora_files = loras
        self.embedding_files = embeddings
        self.hypernetwork_files = hypernetworks
        self.cache = cache
        self._vectors: dict[str, torch.Tensor] = {}
        self._addnet_hashes: dict[str, str] = {}
        """Short addnet hash by file sha256: read once per file and process."""

    def loras(
        self, refs: Sequence[LoraRef], model_width: int
    ) -> tuple[list[LoraUse], tuple[tuple[str, str], ...]]:
        """Each ref's parsed adapter with its weights, and the (name, short hash) pairs."""
        uses, hashes = [], []
        for ref in refs:
            path, sha256 = self.lora_files.resolve(ref.name)
            with _gone_as_user_error(ref.name):
                adapter = self.cache.load(path, sha256=sha256, model_width=model_width)
            uses.append((adapter, ref.te_weight, ref.unet_weight))
            if sha256 not in self._addnet_hashes:
                with _gone_as_user_error(ref.name):
                    self._addnet_hashes[sha256] = addnet_hash(path)[:HASH_DIGITS]
            hashes.append((ref.name, self._addnet_hashes[sha256]))
        return uses, tuple(hashes)

    def hypernetworks(
        self, refs: Sequence[HypernetRef], model_widths: Collection[int]
    ) -> list[HypernetUse]:
        """Each ref's parsed hypernetwork with its strength, in the refs' order."""
        if self.hypernetwork_files is None:
            raise UserError("hypernetworks are not available here: no library was given")
        uses = []
        for ref in refs:
            path, sha256 = self.hypernetwork_files.resolve(ref.name)
            cached = self.cache.get(sha256)
            if not isinstance(cached, Hypernetwork):
                with _gone_as_user_error(ref.name):
                    cached = load_hypernetwork(path, sorted(model_widths), sha256)
                self.cache.put(cached)
            uses.append((cached, ref.strength))
        return uses

    def embeddings(
        self,
        pieces: Sequence[tuple[str, float]],
        model_width: int,
        bundled: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The vectors of every embedding the prompt's pieces name, by name.

        `bundled` are the embeddings of the batch's LoRAs; a LoRA's own embedding wins over a
        library one of the same name, since the LoRA was trained with it.
        """
        bundled = bundled or {}
        found = {}
        known = [*bundled, *self.embedding_files.names()]
        for name in find_embeddings(pieces, known):
            if name in bundled:
                found[name] = bundled[name]
                continue
            path, sha256 = self.embedding_files.resolve(name)
            if sha256 not in self._vectors:
                with _gone_as_user_error(name):
                    self._vectors[sha256] = load_embedding(path, model_width).vectors
            found[name] = self._vectors[sha256]
        return found

    def embedding_hashes(self, names: Iterable[str]) -> tuple[tuple[str, str], ...]:
        """(name, short hash) of library embeddings, as A1111 writes `TI hashes`.

        A1111 hashes an embedding's whole file (not the addnet way), first 12 hex digits.
        """
        return tuple((name, self.embedding_files.resolve(name)[1][:HASH_DIGITS]) for name in names)


@contextmanager
def _gone_as_user_error(name: str) -> Iterator[None]:
    """A file removed from the library after it was resolved becomes a message."""
    try:
        yield
    except FileNotFoundError:
        raise UserError(f"the file of {name!r} is gone from the library: add it again") from None
