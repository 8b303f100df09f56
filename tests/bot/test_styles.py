"""Style presets: checked when an admin adds one, applied to a request in the precedence order."""

from __future__ import annotations

import pytest

from bot.requests import build_request
from bot.settings import load_settings
from bot.styles import (
    Style,
    apply_style,
    find_style,
    make_style,
    style_names,
    with_style,
    without_style,
)
from pipeline.errors import UserError
from pipeline.request import LoraRef

LIMITS = {"max_pixels": 1024 * 1024, "max_steps": 60}
SETTINGS = load_settings(None, model="tiny", default_size="512x512", default_steps=20)


def film(**changes: object) -> Style:
    values = {"template": "film photo of {prompt}, grain", "negative": "blurry"} | changes
    return make_style("Film", known_loras=["Ghibli"], **LIMITS, **values)  # type: ignore[arg-type]


def test_a_style_is_checked_and_normalised() -> None:
    style = make_style(
        "Film",
        "  film photo   of {prompt}  ",
        "blurry",
        loras="ghibli:0.6, other",
        size="3:2",
        steps=30,
        known_loras=["Ghibli", "Other"],
        **LIMITS,
    )
    assert style.template == "film photo of {prompt}"
    assert style.loras == (("Ghibli", 0.6), ("Other", 1.0))
    assert style.size == "640x448"  # a ratio is stored as the size it means
    assert style.steps == 30
    assert Style.from_json(style.to_json()) == style


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"template": "no placeholder"}, "{prompt}"),
        ({"loras": "missing:0.5"}, "not installed or is disabled"),
        ({"loras": "ghibli:heavy"}, "name:weight"),
        ({"loras": "ghibli:9"}, "weight must be"),
        ({"steps": 500}, "steps must be"),
    ],
)
def test_a_bad_style_is_refused_with_what_to_change(changes: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("{", r"\{").replace("}", r"\}")):
        film(**changes)


def test_a_bad_style_name_is_refused() -> None:
    with pytest.raises(UserError, match="not allowed"):
        make_style("two words", "{prompt}", **LIMITS)


def test_styles_are_kept_by_name_in_any_case_and_removed() -> None:
    styles = with_style({}, film())
    assert style_names(styles) == ["Film"]
    assert find_style(styles, "FILM").negative == "blurry"
    replaced = with_style(styles, film(negative="dark"))
    assert list(replaced) == ["film"] and replaced["film"].negative == "dark"
    assert without_style(styles, "film") == {}
    with pytest.raises(UserError, match="no style named 'nope'"):
        find_style(styles, "nope")


def test_applying_wraps_the_prompt_keeps_flags_outside_and_joins_negatives() -> None:
    styled = apply_style(
        film(loras="ghibli:0.5", size="512x768", steps=12),
        "a fox --ar 3:2 --no text",
        None,
        user={},
        server={"negative": "lowres"},
        default_negative="",
        known_loras=["Ghibli"],
    )
    assert styled.prompt == "film photo of a fox, grain --ar 3:2 --no text"
    assert styled.negative == "lowres, blurry"
    assert styled.loras == (LoraRef("Ghibli", 0.5, 0.5),)
    assert styled.server["size"] == "512x768" and styled.server["steps"] == 12


def test_style_size_and_steps_are_server_defaults_that_explicit_options_override() -> None:
    styled = apply_style(
        film(size="512x768", steps=12),
        "a fox",
        "ugly",
        user={},
        server={},
        default_negative="",
        known_loras=[],
    )
    assert styled.negative == "ugly, blurry"
    plain = build_request(styled.prompt, SETTINGS, negative=styled.negative, server=styled.server)
    assert (plain.request.width, plain.request.height, plain.request.steps) == (512, 768, 12)
    explicit = build_request(
        styled.prompt,
        SETTINGS,
        negative=styled.negative,
        server=styled.server,
        explicit={"steps": 5, "width": 512, "height": 512},
    )
    assert (explicit.request.width, explicit.request.steps) == (512, 5)
    assert explicit.request.prompt == "film photo of a fox, grain"


def test_a_style_whose_lora_was_removed_is_refused_before_queueing() -> None:
    with pytest.raises(UserError, match="no longer available"):
        apply_style(
            film(loras="ghibli"),
            "a fox",
            None,
            user={},
            server={},
            default_negative="",
            known_loras=[],
        )


def test_build_request_takes_the_model_from_options_then_server_then_default() -> None:
    assert build_request("a fox", SETTINGS).request.model == "default"
    assert build_request("a fox", SETTINGS, server={"model": "anime"}).request.model == "anime"
    chosen = build_request("a fox", SETTINGS, server={"model": "anime"}, explicit={"model": "x"})
    assert chosen.request.model == "x"
