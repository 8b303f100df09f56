"""/settings validation and the effective defaults it shows."""

from __future__ import annotations

import pytest

from bot.settings import Settings, load_settings
from cogs.account import checked_defaults, effective_defaults
from pipeline.errors import UserError


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings(None, model="tiny", data_dir=tmp_path, max_steps=50, max_images=4)


def test_defaults_are_stored_in_the_form_requests_read(settings: Settings) -> None:
    given = {"size": "2:3", "sampler": "euler a", "steps": 30, "cfg": 6.5, "hires": True}
    hires = {
        "hires_scale": 1.5,
        "hires_steps": 0,
        "hires_denoise": 0.4,
        "hires_upscaler": "lanczos",
    }
    assert checked_defaults({**given, **hires, "clip_skip": 2, "schedule": "karras"}, settings) == {
        "size": "448x640",
        "sampler": "Euler a",
        "schedule": "Karras",
        "steps": 30,
        "cfg": 6.5,
        "clip_skip": 2,
        "hires": True,
        "hires_scale": 1.5,
        "hires_steps": 0,
        "hires_denoise": 0.4,
        "hires_upscaler": "Lanczos",
    }


def test_empty_negative_clears_and_unset_options_are_left_alone(settings: Settings) -> None:
    assert checked_defaults({"negative": "  ", "steps": None}, settings) == {"negative": None}


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ({"size": "513x512"}, "multiples of 8"),
        ({"sampler": "nope"}, "unknown sampler"),
        ({"steps": 51}, "use 1 to 50"),
        ({"count": 5}, "use 1 to 4"),
        ({"cfg": 31.0}, "use 1 to 30"),
        ({"clip_skip": 5}, "clip skip 5 is out of range: use 1 to 4"),
        ({"schedule": "Fancy"}, "unknown schedule type 'Fancy'"),
        ({"hires_scale": 2.5}, "hires scale 2.5 is out of range: use 1 to 2"),
        ({"hires_steps": 51}, "hires steps 51 is out of range: use 0 to 50"),
        ({"hires_upscaler": "Bicubic++"}, "unknown upscaler 'Bicubic\\+\\+'"),
    ],
)
def test_bad_defaults_say_what_to_fix(settings: Settings, given: dict, hint: str) -> None:
    with pytest.raises(UserError, match=hint):
        checked_defaults(given, settings)


def test_effective_defaults_name_where_each_value_comes_from(settings: Settings) -> None:
    rows = {
        name: (value, origin)
        for name, value, origin in effective_defaults(
            {"steps": 12, "hires": True}, {"negative": "blurry"}, settings
        )
    }
    assert rows["steps"] == ("12", "yours")
    assert rows["hires"] == ("on", "yours")
    assert rows["negative"] == ("blurry", "server")
    assert rows["size"] == ("512x512", "bot")
