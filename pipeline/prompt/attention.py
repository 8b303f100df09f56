"""A1111 attention syntax read into (text, weight) pieces: `(x)`, `[x]`, `(x:1.3)`, escapes, BREAK.

This follows AUTOMATIC1111's `parse_prompt_attention` (the current form, which allows spaces
around a weight: `(x : 1.3)`) step for step, including the order in which weights are multiplied,
so the floats and the merging of neighbours come out identical and an image made here can be
reproduced in A1111. The scan is a loop over tokens with two stacks, never recursion, so any
depth of nesting is safe.

One deliberate difference: A1111 crashes on a weight it cannot read, such as `(a:1.2.3)` or
`(a:...)`. Here that `:1.2.3)` is read as plain text (its bracket stays open) and is listed in
`AttentionScan.malformed`, so the caller can report it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_WEIGHT = -1
"""A1111 marks BREAK as the piece ("BREAK", -1); only that exact pair starts a new chunk."""

_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]                # an escaped bracket or backslash: the literal character
    | \\                        # any other backslash: dropped, as A1111 drops it
    | [(\[]                     # an opening bracket
    | :\s*([+-]?[.\d]+)\s*\)    # a weight that closes a round bracket
    | [)\]]                     # a closing bracket
    | [^\\()\[\]:]+             # plain text
    | :                         # a colon that is not a weight
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True)
class AttentionScan:
    """The weighted pieces of a prompt and the weights A1111 could not read (as written)."""

    pieces: list[tuple[str, float]]
    malformed: list[str]


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """The (text, weight) pieces of `text`, exactly as A1111 computes them."""
    return scan_attention(text).pieces


def scan_attention(text: str) -> AttentionScan:
    """Read `text` into weighted pieces, collecting unreadable weights instead of failing."""
    texts: list[str] = []
    weights: list[float] = []
    round_opens: list[int] = []
    square_opens: list[int] = []
    malformed: list[str] = []

    def multiply_from(start: int, multiplier: float) -> None:
        weights[start:] = [weight * multiplier for weight in weights[start:]]

    def add_text(token: str) -> None:
        for index, part in enumerate(_BREAK.split(token)):
            if index:
                texts.append("BREAK")
                weights.append(BREAK_WEIGHT)
            texts.append(part)
            weights.append(1.0)

    for match in _TOKEN.finditer(text):
        token, weight = match[0], match[1]
        if token[0] == "\\":
            texts.append(token[1:])
            weights.append(1.0)
        elif token == "(":
            round_opens.append(len(texts))
        elif token == "[":
            square_opens.append(len(texts))
        elif weight is not None and round_opens:
            value = _read_weight(weight)
            if value is None:
                malformed.append(token)
                add_text(token)
            else:
                multiply_from(round_opens.pop(), value)
        elif token == ")" and round_opens:
            multiply_from(round_opens.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_opens:
            multiply_from(square_opens.pop(), SQUARE_MULTIPLIER)
        else:
            add_text(token)

    # Unclosed brackets apply to the rest of the prompt: all round ones first, then square ones.
    for start in round_opens:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_opens:
        multiply_from(start, SQUARE_MULTIPLIER)
    return AttentionScan(_merge_equal_neighbours(texts, weights), malformed)


def _read_weight(text: str) -> float | None:
    """The number in `text` (digits and dots), or None where A1111's float() would fail."""
    try:
        return float(text)
    except ValueError:
        return None


def _merge_equal_neighbours(texts: list[str], weights: list[float]) -> list[tuple[str, float]]:
    """Join runs of pieces with equal weights, as A1111 does after parsing."""
    if not texts:
        return [("", 1.0)]
    merged: list[tuple[list[str], float]] = []
    for text, weight in zip(texts, weights, strict=True):
        if merged and merged[-1][1] == weight:
            merged[-1][0].append(text)
        else:
            merged.append(([text], weight))
    return [("".join(parts), weight) for parts, weight in merged]
