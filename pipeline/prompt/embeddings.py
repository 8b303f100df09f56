"""Which textual-inversion embeddings a prompt uses, matched the way A1111 matches them.

A1111 finds an embedding by its name's CLIP tokens inside each attention piece's tokens. CLIP
lowercases text and splits it into words, single digits and runs of punctuation before BPE, so
the match is case-insensitive and on whole words: `EasyNegative` is found in `(easynegative:1.2)`
but not in `easynegatives` or in `easy negative`. Here the same split is done with a regular
expression, so no tokenizer is needed. The names are indexed once per set of names, not once per
prompt: with thousands of embeddings that was most of the cost of reading a prompt.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from functools import lru_cache

from pipeline.prompt.attention import BREAK_WEIGHT

_CLIP_WORD = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+")


def find_embeddings(pieces: Sequence[tuple[str, float]], known: Collection[str]) -> tuple[str, ...]:
    """The known embedding names used in the pieces, in order of first use, each once."""
    by_first_word = _by_first_word(known if isinstance(known, frozenset) else frozenset(known))
    found: dict[str, None] = {}
    for text, weight in pieces:
        if text == "BREAK" and weight == BREAK_WEIGHT:
            continue
        words = _words(text)
        position = 0
        while position < len(words):
            step = 1
            for name_words, name in by_first_word.get(words[position], ()):
                if tuple(words[position : position + len(name_words)]) == name_words:
                    found[name] = None
                    step = len(name_words)
                    break
            position += step
    return tuple(found)


@lru_cache(maxsize=8)
def _by_first_word(known: frozenset[str]) -> Mapping[str, list[tuple[tuple[str, ...], str]]]:
    """Names by their first CLIP word, the longest first (as A1111 matches them)."""
    by_first_word: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for name in sorted(known):
        words = _words(name)
        if words:
            by_first_word.setdefault(words[0], []).append((words, name))
    for candidates in by_first_word.values():
        candidates.sort(key=lambda candidate: -len(candidate[0]))
    return by_first_word


def _words(text: str) -> tuple[str, ...]:
    return tuple(_CLIP_WORD.findall(text.lower()))
