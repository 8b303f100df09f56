"""A1111's composable prompts: `a cat AND a dog:0.5` is one part per `AND`, each with a weight.

A1111 splits the prompt at every `AND` written as a whole upper-case word, before it reads prompt
editing or attention, so an `AND` inside brackets splits them too. A part that ends in `:number`
takes that number as its weight (so does a prompt without `AND`: `a cat:0.5` is the part "a cat"
at weight 0.5); text ends where the spaces before the weight, or at the end, begin.
"""

from __future__ import annotations

import re

_AND = re.compile(r"\bAND\b")
_WEIGHTED = re.compile(r"(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*", re.DOTALL)


def split_parts(prompt: str) -> tuple[tuple[str, float], ...]:
    """The (text, weight) parts of a prompt, in order; identical parts stay separate."""
    parts = []
    for part in _AND.split(prompt):
        match = _WEIGHTED.fullmatch(part)
        assert match is not None  # the text group takes anything, the rest is optional
        text, weight = match.groups()
        parts.append((text, float(weight) if weight is not None else 1.0))
    return tuple(parts)


def has_and(text: str) -> bool:
    """Whether `text` holds an `AND` that A1111 would split a prompt at."""
    return _AND.search(text) is not None
