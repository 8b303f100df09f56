"""Finding a server's banned words in prompt text, however the text is dressed up.

A word list only holds if the obvious disguises do not pass, so text and words are both brought
to one plain form (`words_of`) before they are compared:

- NFKC (fullwidth and other compatibility letters become plain ones) and casefolding;
- zero-width and other format characters, accents and combining marks removed;
- every other non-letter, non-digit (`_ - . | , ( ) :` ...) is a space;
- the text is read twice, as written and with camelCase split (`NudeBody`), since splitting
  alone would let mixed case through (`nUdE`);
- a run of single letters (`n u d e`, `n.u.d.e`) is also read joined up;
- a word also matches its simple plural or singular (`nude`, `nudes`; `body`, `bodies`).

A banned word must still be a whole word: `nude` does not refuse `denuded` or `nudebody`. Time
is linear in the length of the text (one pass, set look-ups), whatever it holds.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

_DROPPED = {"Cf", "Mn", "Me"}
"""Unicode categories removed: format (zero-width, soft hyphen) and combining marks."""
_CAMEL = re.compile(r"(?<=[^\W\d_])(?=[A-Z][a-z])|(?<=[a-z])(?=[A-Z])")
_WORD = re.compile(r"[^\W_]+")
MIN_SPACED_RUN = 2
"""Single letters in a row read as one word from this many on (`n u d e`)."""


def _drop_marks(text: str) -> str:
    return "".join(char for char in text if unicodedata.category(char) not in _DROPPED)


def words_of(text: str, split_camel: bool = False) -> list[str]:
    """The plain words of `text` (see the module docstring), in order."""
    text = _drop_marks(unicodedata.normalize("NFKC", text))
    if split_camel:
        text = _CAMEL.sub(" ", text)
    text = text.casefold()
    text = _drop_marks(unicodedata.normalize("NFKD", text))
    return _WORD.findall(text)


def forms(word: str) -> set[str]:
    """A word, its simple plurals, and its singular when it looks plural."""
    found = {word, word + "s", word + "es"}
    if word.endswith("y") and len(word) > 1:
        found.add(word[:-1] + "ies")
    if word.endswith("ies") and len(word) > 3:
        found.add(word[:-3] + "y")
    if word.endswith("es") and len(word) > 2:
        found.add(word[:-2])
    if word.endswith("s") and len(word) > 1:
        found.add(word[:-1])
    return found


def _spaced_runs(words: Sequence[str]) -> list[str]:
    """Runs of single-character words, joined: `n u d e` is read as `nude`."""
    runs, current = [], []
    for word in [*words, ""]:
        if len(word) == 1:
            current.append(word)
            continue
        if len(current) >= MIN_SPACED_RUN:
            runs.append("".join(current))
        current = []
    return runs


def find_banned(texts: Iterable[str], banned: Iterable[str]) -> list[str]:
    """The entries of `banned` (as written) that any of `texts` contains (see the module)."""
    texts = list(texts)
    readings = [_reading(texts, split_camel) for split_camel in (False, True)]
    found = []
    for entry in banned:
        parts = words_of(entry)
        if parts and any(reading.has(parts) for reading in readings):
            found.append(entry)
    return found


class _Reading:
    """One reading of the texts: their words in order, as a set, and their spaced-out runs."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.present = set(words)
        self.runs = _spaced_runs(words)

    def has(self, parts: Sequence[str]) -> bool:
        return _has_phrase(self.words, self.present, parts) or _in_runs(self.runs, parts)


def _reading(texts: Sequence[str], split_camel: bool) -> _Reading:
    words: list[str] = []
    for text in texts:
        words.extend(words_of(text, split_camel))
        words.append("")  # texts do not run into each other
    return _Reading(words)


def _has_phrase(words: Sequence[str], present: set[str], parts: Sequence[str]) -> bool:
    """`parts` as consecutive words, the last in any of its `forms`."""
    last = forms(parts[-1])
    if len(parts) == 1:
        return not last.isdisjoint(present)
    if parts[0] not in present:
        return False
    size = len(parts)
    return any(
        list(words[i : i + size - 1]) == list(parts[:-1]) and words[i + size - 1] in last
        for i in range(len(words) - size + 1)
        if words[i] == parts[0]
    )


def _in_runs(runs: Sequence[str], parts: Sequence[str]) -> bool:
    joined = "".join(parts)
    return any(joined in run for run in runs)
