"""Parsed adapters kept in memory between batches, bounded by bytes, least recently used out first.

Parsing a file means reading and checking every tensor; a LoRA used by consecutive batches should
not pay that again. Keyed by the file's sha256, so a renamed file is still a hit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

from pipeline.lora.adapter import Adapter, file_sha256, load_adapter
from pipeline.lora.inspection import SD1_WIDTH


class Parsed(Protocol):
    """A parsed file: an adapter or a hypernetwork, known by its sha256 and its size in memory."""

    @property
    def sha256(self) -> str: ...

    @property
    def nbytes(self) -> int: ...


class AdapterCache:
    """An LRU of parsed adapters and hypernetworks holding at most `max_bytes` of tensors."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Parsed] = OrderedDict()
        self._lock = threading.Lock()  # the worker loads, the app may ask for stats meanwhile

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(adapter.nbytes for adapter in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, sha256: str) -> Parsed | None:
        with self._lock:
            adapter = self._entries.get(sha256)
            if adapter is not None:
                self._entries.move_to_end(sha256)
            return adapter

    def load(
        self, path: Path, *, sha256: str | None = None, model_width: int = SD1_WIDTH
    ) -> Adapter:
        """The cached adapter for `path`, parsing it on a miss; a known `sha256` skips hashing."""
        key = sha256 or file_sha256(path)
        if isinstance(cached := self.get(key), Adapter):
            return cached
        adapter = load_adapter(path, model_width, sha256=key)
        self.put(adapter)
        return adapter

    def put(self, adapter: Parsed) -> None:
        """Keep `adapter`, evicting the least recently used; one over the bound is not kept."""
        if adapter.nbytes > self.max_bytes:
            return
        with self._lock:
            self._entries[adapter.sha256] = adapter
            self._entries.move_to_end(adapter.sha256)
            total = sum(a.nbytes for a in self._entries.values())
            while total > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                total -= evicted.nbytes
