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


@pytest.mark.parametrize(
    ("explicit", "user", "env", "expected"),
    [
        ({}, {}, {}, ("CPU", 0)),
        ({}, {}, {"rng": "gpu", "ensd": 31337}, ("GPU", 31337)),
        ({}, {"rng": "NV", "ensd": 5}, {"rng": "gpu"}, ("NV", 5)),
        ({"rng": "CPU", "ensd": 0}, {"rng": "NV", "ensd": 5}, {}, ("CPU", 0)),
    ],
)
def test_rng_and_ensd_come_from_the_first_layer_that_sets_them(
    explicit: dict, user: dict, env: dict, expected: tuple[str, int]
) -> None:
    settings = load_settings(None, model="tiny", **env)
    request = build_request("a fox", settings, explicit=explicit, user=user).request
    assert (request.rng, request.ensd) == expected
