"""Text encodings kept between batches, least recently used out first.

A Discord server rerolls and varies the same prompts all day; their encodings depend only on
what goes into the text encoder, which is all in the key: the model, the LoRAs patched into
its text encoder with their weights, the texts with their repeat counts (A1111 encodes a
schedule's texts as one batch), clip skip, and the embeddings the texts use. A LoRA change
therefore misses, as it must.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

V = TypeVar("V")

DEFAULT_ENTRIES = 256
"""An SD1.5 encoding is 77 x 768 values a chunk: 256 one-chunk schedules are about 30 MB in fp16."""


class EncodingCache:
    """An LRU of encodings by key; used from the model thread only."""

    def __init__(self, entries: int = DEFAULT_ENTRIES) -> None:
        self.entries = entries
        self._items: OrderedDict[Hashable, object] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, encode: Callable[[], V]) -> V:
        """The encoding under `key`, from `encode()` on a miss."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]  # type: ignore[return-value]
        value = encode()
        self._items[key] = value
        while len(self._items) > self.entries:
            self._items.popitem(last=False)
        return value
