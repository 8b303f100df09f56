"""AND splits a prompt into weighted parts as A1111's `get_multicond_prompt_list` does.

The expected parts follow A1111 1.10's two rules: split at `\\bAND\\b`, then a part ending in
`:number` (digits with an optional point, spaces around the colon allowed) has that weight and
loses the spaces before it.
"""

from __future__ import annotations

import pytest

from pipeline.prompt.composable import has_and, split_parts


@pytest.mark.parametrize(
    ("prompt", "parts"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a cat AND a dog", [("a cat", 1.0), (" a dog", 1.0)]),
        ("a cat:1.2 AND a dog:0.5", [("a cat", 1.2), (" a dog", 0.5)]),
        ("a cat : 2. AND a dog :-1", [("a cat", 2.0), (" a dog", -1.0)]),
        ("a cat:.5", [("a cat", 0.5)]),  # a weight without AND weighs the whole prompt
        ("a cat  ", [("a cat", 1.0)]),
        ("cat AND", [("cat", 1.0), ("", 1.0)]),
        ("ANDROID AND and", [("ANDROID", 1.0), (" and", 1.0)]),
        ("(cat:1.2)", [("(cat:1.2)", 1.0)]),
        ("[cat:dog:5]", [("[cat:dog:5]", 1.0)]),
        ("cat:1e2", [("cat:1e2", 1.0)]),
        ("[cat AND dog:5]", [("[cat", 1.0), (" dog:5]", 1.0)]),  # AND splits brackets too
        ("a\nb:2", [("a\nb", 2.0)]),
        ("a cat AND a cat", [("a cat", 1.0), (" a cat", 1.0)]),
    ],
)
def test_parts_and_weights_are_a1111s(prompt: str, parts: list[tuple[str, float]]) -> None:
    assert list(split_parts(prompt)) == parts


@pytest.mark.parametrize(("text", "found"), [("a AND b", True), ("ANDROID", False), ("and", False)])
def test_only_a_whole_upper_case_and_counts(text: str, found: bool) -> None:
    assert has_and(text) is found
