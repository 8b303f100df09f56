"""Building a request from the prompt and every layer of options: clip skip as the example."""

from __future__ import annotations

import pytest

from bot.requests import build_request
from bot.settings import load_settings

SETTINGS = load_settings(None, model="tiny")


@pytest.mark.parametrize(
    ("text", "explicit", "user", "server", "expected"),
    [
        ("a fox", {}, {}, {}, 1),
        ("a fox", {}, {}, {"clip_skip": 2}, 2),
        ("a fox", {}, {"clip_skip": 3}, {"clip_skip": 2}, 3),
        ("a fox --clip-skip 2", {}, {"clip_skip": 3}, {}, 2),
        ("a fox --clip-skip 2", {"clip_skip": 4}, {}, {}, 4),
    ],
)
def test_clip_skip_comes_from_the_first_layer_that_sets_it(
    text: str, explicit: dict, user: dict, server: dict, expected: int
) -> None:
    built = build_request(text, SETTINGS, explicit=explicit, user=user, server=server)
    assert built.request.clip_skip == expected
    assert built.request.prompt == "a fox"
