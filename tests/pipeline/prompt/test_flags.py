"""Midjourney-style flags: cut from the prompt, values checked, request fields set."""

from __future__ import annotations

import pytest

from pipeline.prompt.flags import extract_flags
from pipeline.prompt.limits import PromptLimits
from pipeline.request import MAX_SEED

LIMITS = PromptLimits(max_steps=60, max_images=4, max_pixels=1024 * 1024)


def flags(text, limits=LIMITS):
    return extract_flags(text, limits)


@pytest.mark.parametrize(
    ("text", "prompt", "values"),
    [
        ("a cat --ar 3:2", "a cat", {"width": 640, "height": 448}),
        ("a cat --aspect 2:3", "a cat", {"width": 448, "height": 640}),
        ("a cat --size 512x768", "a cat", {"width": 512, "height": 768}),
        ("a cat --size 1:1", "a cat", {"width": 512, "height": 512}),
        ("a cat --seed 42 --steps 30", "a cat", {"seed": 42, "steps": 30}),
        ("a cat --cfg 7.5 --count 2", "a cat", {"cfg": 7.5, "count": 2}),
        ("a cat --hires", "a cat", {"hires": True}),
        ("anime girl --clip-skip 2", "anime girl", {"clip_skip": 2}),
        ("a cat —ar 3:2", "a cat", {"width": 640, "height": 448}),
        ("a cat --AR 3:2", "a cat", {"width": 640, "height": 448}),
        ("a cat --ar 3:2, --seed 1", "a cat", {"width": 640, "height": 448, "seed": 1}),
        ("a cat --seed 7 in the snow", "a cat in the snow", {"seed": 7}),
        ("a cat --hires in the snow", "a cat in the snow", {"hires": True}),
        ("a cat --fast in the snow", "a cat in the snow", {"fast": True}),
        ("a cat --fast --hires", "a cat", {"fast": True, "hires": True}),
        (f"x --seed {MAX_SEED}", "x", {"seed": MAX_SEED}),
    ],
)
def test_flags_set_request_fields_and_leave_the_prompt(text, prompt, values):
    result = flags(text)
    assert result.errors == ()
    assert result.text == prompt
    assert result.values == values


def test_no_takes_the_text_up_to_the_next_flag():
    result = flags("a cat --no dogs, birds --seed 3 --no text")
    assert result.no == ("dogs, birds", "text")
    assert result.values == {"seed": 3}
    assert result.text == "a cat"


def test_text_without_flags_comes_back_unchanged():
    text = "  a well-known cat -- really, high--quality -x  "
    assert flags(text).text == text
    assert flags(text).values == {} and flags(text).errors == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x --v 5", "unknown flag --v: the flags are --ar, --size, --no, --seed"),
        ("x --sed 5", "did you mean --seed?"),
        ("x --seed", "--seed needs a value: write for example --seed 1234"),
        ("x --seed --steps 20", "--seed needs a value"),
        ("x --seed -1", "use a whole number from 0 to"),
        ("x --seed 1.5", "use a whole number from 0 to"),
        (f"x --seed {MAX_SEED + 1}", "leave --seed out for a random one"),
        ("x --seed " + "9" * 5000, "use a whole number"),
        ("x --steps 0", "--steps 0: use a whole number from 1 to 60"),
        ("x --steps 61", "from 1 to 60"),
        ("x --count 5", "--count 5: use a whole number from 1 to 4"),
        ("x --cfg 0.5", "--cfg 0.5: use a number from 1 to 30"),
        ("x --cfg nan", "--cfg nan: use a number"),
        ("x --cfg 1e400", "--cfg 1e400: use a number"),
        ("x --ar 16x9", "write the aspect ratio as W:H"),
        ("x --ar 10:1", "too extreme"),
        ("x --size 513x512", "multiples of 8"),
        ("x --size 2048x2048", "over the limit"),
        ("x --size big", "is not WxH or W:H"),
        ("x --ar 3:2 --size 512x512", "--ar and --size both set the size: keep one"),
        ("x --seed 1 --seed 2", "--seed is given twice: keep one"),
        ("x --no", "--no needs text after it"),
        ("x --clip-skip 5", "--clip-skip 5: use a whole number from 1 to 4 (2 for most anime"),
        ("x --clipskip 2", "did you mean --clip-skip?"),
    ],
)
def test_bad_flags_are_errors_that_say_what_is_allowed(text, message):
    result = flags(text)
    assert any(message in error for error in result.errors), result.errors
