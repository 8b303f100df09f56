"""Installed names looked up by spelling, and "did you mean" for a misspelt one, at a bounded cost.

One difflib search over a library of 5,000 names takes about 10 ms; run for each of a prompt's
many misspelt tags (twice, before), it held the event loop for seconds. Now a prompt gets
suggestions for its first `MAX_SUGGESTED` distinct unknown names only (`SuggestionBudget`); the
rest are reported as unknown, without a search. So a prompt costs at most `MAX_SUGGESTED`
searches whatever its length, and each one is difflib over every name, as good as before. The
spellings are indexed once per set of names (`name_index`), not once per prompt.

A prefilter (only names sharing letter pairs with the misspelt one) was tried and dropped: short
names with a common suffix (`rwd-xl`) tie with hundreds of others and lost their suggestion.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from functools import lru_cache

MAX_SUGGESTED = 3
"""Unknown names per prompt that get a "did you mean"."""
MAX_SHOWN = 3
CUTOFF = 0.6
"""difflib's own default similarity cut-off."""
MAX_NAME = 200
"""Longer names are not compared at all: no installed name is that long."""


class NameIndex:
    """One set of installed names, by exact and by case-insensitive spelling."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        folded: dict[str, list[str]] = {}
        for name in names:
            folded.setdefault(name.casefold(), []).append(name)
        self._folded = {key: sorted(spellings) for key, spellings in folded.items()}

    def find(self, name: str) -> str | None:
        """The installed spelling of `name`: exact, else the one case-insensitive match."""
        if name in self.names:
            return name
        matches = self._folded.get(name.casefold(), [])
        return matches[0] if len(matches) == 1 else None

    def closest(self, name: str) -> tuple[str, ...]:
        """Up to `MAX_SHOWN` installed spellings close to `name`, closest first."""
        if len(name) > MAX_NAME:
            return ()
        close = difflib.get_close_matches(name.casefold(), self._folded, n=MAX_SHOWN, cutoff=CUTOFF)
        return tuple([spelling for found in close for spelling in self._folded[found]][:MAX_SHOWN])


@lru_cache(maxsize=8)
def name_index(names: frozenset[str]) -> NameIndex:
    """The index of a set of names, built once: libraries change far less often than prompts."""
    return NameIndex(names)


def index_of(names: Collection[str]) -> NameIndex:
    return name_index(names if isinstance(names, frozenset) else frozenset(names))


class SuggestionBudget:
    """The "did you mean" searches one prompt may make: `MAX_SUGGESTED` distinct names."""

    def __init__(self, allowed: int = MAX_SUGGESTED) -> None:
        self._left = allowed
        self._found: dict[tuple[NameIndex, str], tuple[str, ...]] = {}

    def closest(self, index: NameIndex, name: str) -> tuple[str, ...] | None:
        """The names close to `name`, or None once the budget is spent."""
        key = (index, name)
        if key not in self._found:
            if self._left == 0:
                return None
            self._left -= 1
            self._found[key] = index.closest(name)
        return self._found[key]
