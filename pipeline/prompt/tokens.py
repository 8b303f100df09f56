"""A1111's token counter (the "45/75" beside its prompt box), to show how long a prompt is.

The chunks come from the engine's own packing (`pipeline.conditioning`), so the count shown is
the one used. A1111 counts 75 for every chunk that a later chunk or a BREAK closed, and the real
number of tokens for the open last chunk; a BREAK at the very end therefore counts as a full one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.conditioning import CHUNK_LENGTH, split_into_chunks
from pipeline.prompt.attention import BREAK_WEIGHT

if TYPE_CHECKING:
    from transformers import CLIPTokenizer


@dataclass(frozen=True)
class TokenCount:
    """How many tokens A1111 would show for a prompt, and how many 77-token chunks it encodes."""

    tokens: int
    chunks: int


def count_tokens(pieces: Sequence[tuple[str, float]], tokenizer: CLIPTokenizer) -> TokenCount:
    """Count the weighted pieces of one prompt the way A1111's counter does."""
    chunks, _ = split_into_chunks(pieces, tokenizer)
    breaks = [i for i, piece in enumerate(pieces) if piece == ("BREAK", BREAK_WEIGHT)]
    if breaks and not _has_tokens(pieces[breaks[-1] + 1 :], tokenizer):
        return TokenCount(CHUNK_LENGTH * len(chunks), len(chunks))
    return TokenCount(CHUNK_LENGTH * (len(chunks) - 1) + len(chunks[-1].tokens), len(chunks))


def _has_tokens(pieces: Sequence[tuple[str, float]], tokenizer: CLIPTokenizer) -> bool:
    texts = [text for text, _ in pieces]
    return bool(texts) and any(tokenizer(texts, add_special_tokens=False)["input_ids"])
