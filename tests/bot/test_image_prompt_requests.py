"""Building requests with image prompts: `--iw` weights the pictures, styles stay at 1."""

from __future__ import annotations

import pytest

from bot.requests import NO_IMAGE_FOR_IW, build_request, with_image_prompts
from bot.settings import load_settings
from pipeline.errors import UserError
from pipeline.request import ImagePrompt

SETTINGS = load_settings(None, model="tiny")


def test_iw_weights_the_pictures_without_their_own_weight() -> None:
    built = build_request("a fox --iw 3", SETTINGS)
    request = with_image_prompts(built, [("/a.png", None), ("/b.png", 0.25)], ["/s.png"])
    assert request.image_prompts == (
        ImagePrompt("/a.png", 2.0),
        ImagePrompt("/b.png", 0.25),
        ImagePrompt("/s.png", 1.0, style=True),
    )
    assert request.prompt == "a fox"


def test_without_iw_a_picture_weighs_1() -> None:
    request = with_image_prompts(build_request("a fox", SETTINGS), [("/a.png", None)])
    assert request.image_prompts == (ImagePrompt("/a.png", 1.0),)


def test_iw_without_a_picture_is_refused() -> None:
    with pytest.raises(UserError) as refused:
        with_image_prompts(build_request("a fox --iw 2", SETTINGS), [], ["/s.png"])
    assert str(refused.value) == NO_IMAGE_FOR_IW
