"""Building a request from the prompt and every layer of options: clip skip and highres fix."""

from __future__ import annotations

import pytest

from bot.requests import build_request
from bot.settings import load_settings
from pipeline.errors import UserError
from pipeline.request import HiresSpec

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
    ("text", "explicit", "user", "expected"),
    [
        ("a fox", {}, {}, None),
        ("a fox --hires", {}, {}, HiresSpec(2.0, 15, 0.55, "Latent")),
        ("a fox", {}, {"hires": True, "hires_scale": 1.5}, HiresSpec(1.5, 15, 0.55, "Latent")),
        # Giving a hires setting explicitly asks for highres fix; an explicit off wins.
        ("a fox", {"hires_steps": 8}, {}, HiresSpec(2.0, 8, 0.55, "Latent")),
        ("a fox --hires", {"hires": False, "hires_scale": 1.5}, {}, None),
        # A saved hires setting alone does not switch highres fix on.
        ("a fox", {}, {"hires_scale": 1.5}, None),
        # The denoise defaults to the upscaler's own unless a layer sets it.
        ("a fox", {"hires_upscaler": "lanczos"}, {}, HiresSpec(2.0, 15, 0.35, "Lanczos")),
        (
            "a fox",
            {"hires_upscaler": "Latent (nearest)", "hires_denoise": 0.4},
            {"hires_denoise": 0.7},
            HiresSpec(2.0, 15, 0.4, "Latent (nearest)"),
        ),
    ],
)
def test_highres_fix_comes_from_its_switch_and_settings(
    text: str, explicit: dict, user: dict, expected: HiresSpec | None
) -> None:
    built = build_request(text, SETTINGS, explicit=explicit, user=user)
    assert built.request.hires == expected


def test_an_unknown_hires_upscaler_names_the_choices() -> None:
    with pytest.raises(UserError, match=r"unknown upscaler 'Bicubic\+\+'.*Latent"):
        build_request("a fox", SETTINGS, explicit={"hires_upscaler": "Bicubic++"})
