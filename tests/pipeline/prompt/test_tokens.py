"""The token counter shows what A1111's "N/75" counter shows, chunks included."""

from __future__ import annotations

import pytest

from pipeline.prompt.attention import parse_prompt_attention
from pipeline.prompt.tokens import TokenCount, count_tokens
from pipeline.tokenizer import load_clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", TokenCount(0, 1)),
        ("a fox, in the snow", TokenCount(6, 1)),
        ("(a fox:1.3), [in the snow]", TokenCount(6, 1)),
        ("a BREAK b", TokenCount(76, 2)),
        ("a BREAK", TokenCount(75, 1)),
        ("BREAK", TokenCount(75, 1)),
        ("(a BREAK b)", TokenCount(3, 1)),
        (", ".join(["red cat"] * 40), TokenCount(119, 2)),
        ("cat " * 150, TokenCount(150, 2)),
    ],
)
def test_counts_like_a1111(tokenizer, text, expected):
    assert count_tokens(parse_prompt_attention(text), tokenizer) == expected
