"""parse_prompt: one call reads flags, tags, attention and embeddings, and never raises."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import UserError
from pipeline.prompt import PromptLimits, merge_options, parse_prompt
from pipeline.request import LoraRef

KNOWN_LORAS = {"ghibli", "add_detail"}
KNOWN_EMBEDDINGS = {"EasyNegative", "bad_prompt_version2", "by bad artist"}


def parse(text, negative="", **kwargs):
    kwargs.setdefault("known_loras", KNOWN_LORAS)
    kwargs.setdefault("known_embeddings", KNOWN_EMBEDDINGS)
    return parse_prompt(text, negative, **kwargs)


def test_a_full_discord_prompt_is_read_into_its_parts():
    parsed = parse(
        "a fox in the snow <lora:ghibli:0.7>, (detailed fur:1.2) --ar 3:2 --no people",
        "EasyNegative, blurry",
    )
    assert parsed.ok and parsed.errors == () and parsed.warnings == ()
    assert parsed.prompt == "a fox in the snow , (detailed fur:1.2)"
    assert parsed.negative == "EasyNegative, blurry, people"
    assert parsed.attention == (("a fox in the snow , ", 1.0), ("detailed fur", 1.2))
    assert parsed.negative_attention == (("EasyNegative, blurry, people", 1.0),)
    assert parsed.loras == (LoraRef("ghibli", 0.7, 0.7),)
    assert parsed.negative_embeddings == ("EasyNegative",)
    assert dict(parsed.flags) == {"width": 640, "height": 448}
    parsed.raise_if_errors()


def test_plain_prompt_passes_through_untouched():
    parsed = parse("  masterpiece, (a:1.1) [b] BREAK c ")
    assert parsed.prompt == "  masterpiece, (a:1.1) [b] BREAK c "
    assert parsed.negative == "" and parsed.negative_attention == (("", 1.0),)
    assert parsed.attention[-2:] == (("BREAK", -1), ("c ", 1.0))


def test_errors_are_all_collected_and_raised_as_one_user_error():
    parsed = parse("<lora:ghibly:1> (a:1.2.3) --steps 999 --v 6")
    assert not parsed.ok
    assert len(parsed.errors) == 4
    assert "weight ':1.2.3)' is not a number" in parsed.errors[-1]
    with pytest.raises(UserError) as raised:
        parsed.raise_if_errors()
    assert str(raised.value) == "; ".join(parsed.errors)


def test_no_appends_to_an_existing_negative_with_one_comma():
    assert parse("x --no cars", "blurry, ").negative == "blurry, cars"
    assert parse("x --no cars --no trees").negative == "cars, trees"


def test_tag_in_the_negative_is_removed_with_a_warning():
    parsed = parse("x --no <lora:ghibli:1> dogs", "ugly <lora:add_detail:1>")
    assert parsed.loras == ()
    assert parsed.negative == "ugly ,  dogs"
    assert len(parsed.warnings) == 2
    assert "no effect in the negative prompt" in parsed.warnings[0]


def test_too_long_prompt_is_refused_before_parsing():
    parsed = parse("x" * 101, limits=PromptLimits(max_length=100))
    assert parsed.errors == ("the prompt is 101 characters long, the limit is 100",)


def test_attention_weight_beyond_the_limit_is_an_error():
    assert "attention weight 12" in parse("(x:12)").errors[0]
    assert "attention weight inf" in parse("(x:" + "9" * 400 + ")").errors[0]
    assert parse("(x:-9.5)").ok


def test_break_inside_brackets_warns_that_it_is_read_as_a_word():
    parsed = parse("(a BREAK b)")
    assert parsed.attention[1] == ("BREAK", -1.1)
    assert "BREAK inside brackets" in parsed.warnings[0]


@pytest.mark.parametrize(
    "text",
    [
        "a [cat:dog:0.5] b",
        "a [cat:10]",
        "a [cat::0.3]",
        "a [cat|dog|fox]",
        "a cat AND a dog:0.5",
        "[(a:1.2)]",
        "\\[a:b:0.5\\]",
        "[a:b]",
        "(a|b)",
        "[a BREAK b:5]",
    ],
)
def test_a1111_editing_alternation_and_and_are_read_without_warnings(text):
    parsed = parse(text)
    assert parsed.ok and parsed.warnings == ()


def test_an_extra_network_tag_inside_an_edit_is_said_to_apply_at_every_step():
    warning = "<lora:ghibli:1> is inside prompt editing or alternation"
    for text in ("a [<lora:ghibli:1>:10] cat", "a [<lora:ghibli:1>|b]", "[x:<lora:ghibli:1>:0.5]"):
        parsed = parse(text)
        assert parsed.ok and parsed.loras == (LoraRef("ghibli"),)
        assert any(warning in message for message in parsed.warnings), (text, parsed.warnings)
    assert parse("<lora:ghibli:1> [a:b:3] AND [c|d]").warnings == ()


def test_and_in_the_negative_is_read_as_the_word_with_a_warning():
    assert "AND in the negative prompt is read as the word" in parse("x", "a AND b").warnings[0]


def test_too_many_and_parts_are_an_error():
    parsed = parse(" AND ".join(["a"] * 9))
    assert not parsed.ok and "9 AND parts, the limit is 8" in parsed.errors[0]


def test_attention_is_checked_in_every_text_the_editing_gives():
    # As written, (a:[2|20]) has no weight; its texts are (a:2) and (a:20).
    parsed = parse("(a:[2|20])")
    assert any("'a' has attention weight 20" in error for error in parsed.errors), parsed.errors
    assert not parse("(a:[2|9])").errors
    # BREAK inside an edit is a chunk break once the edit is read; inside ( ) it is a word.
    assert any("BREAK inside brackets" in w for w in parse("[(a BREAK b):c:5]").warnings)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("EasyNegative, blurry", ("EasyNegative",)),
        ("(easynegative:1.2)", ("EasyNegative",)),
        ("EASYNEGATIVE", ("EasyNegative",)),
        ("easynegatives", ()),
        ("easy negative", ()),
        ("(easy)negative", ()),
        ("bad_prompt_version2, by bad artist", ("bad_prompt_version2", "by bad artist")),
        ("by bad artists", ()),
        ("a BREAK easynegative", ("EasyNegative",)),
    ],
)
def test_embeddings_match_whole_clip_words_ignoring_case(text, found):
    assert parse(text).embeddings == found
    assert parse("x", text).negative_embeddings == found


def test_merge_options_follows_explicit_then_flags_then_user_then_server():
    merged = merge_options(
        explicit={"steps": 40, "seed": None},
        flags={"steps": 30, "seed": 7, "cfg": 5.0},
        user={"cfg": 6.0, "sampler": "Euler a"},
        server={"cfg": 7.0, "sampler": "DPM++ 2M Karras", "width": 512},
    )
    assert merged == {"steps": 40, "seed": 7, "cfg": 5.0, "sampler": "Euler a", "width": 512}


PROMPT_TEXT = st.lists(
    st.sampled_from(
        [
            "(",
            ")",
            "[",
            "]",
            "\\",
            ":",
            "1.5",
            "9999",
            " ",
            "a",
            "BREAK",
            "AND",
            "|",
            ",",
            "<",
            ">",
            "lora:",
            "ghibli",
            "hypernet:",
            "--ar",
            "--no",
            "--seed",
            "3:2",
            "—",
            "=",
            "-",
        ]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | PROMPT_TEXT, st.text(max_size=50) | PROMPT_TEXT)
def test_any_text_is_read_without_exceptions_and_accepted_results_are_in_limits(text, negative):
    limits = PromptLimits(max_loras=2)
    started = time.perf_counter()
    parsed = parse(text, negative, limits=limits)
    assert time.perf_counter() - started < 1
    assert all(isinstance(message, str) for message in parsed.errors + parsed.warnings)
    if parsed.ok:
        for _, weight in parsed.attention + parsed.negative_attention:
            assert math.isfinite(weight) and abs(weight) <= limits.max_attention
        assert len(parsed.loras) <= limits.max_loras
        for ref in parsed.loras:
            assert ref.name in KNOWN_LORAS
            assert -3 <= ref.te_weight <= 3 and -3 <= ref.unet_weight <= 3


def test_deep_nesting_within_the_length_limit_is_quick():
    started = time.perf_counter()
    for text in ("(a" * 3000, "(" * 3000 + "x" + ")" * 3000, "[a|" * 2000, "<a:" * 2000):
        parse(text)
    assert time.perf_counter() - started < 3
