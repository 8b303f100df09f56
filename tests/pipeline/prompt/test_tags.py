"""Extra-network tags: cut from the text as A1111 does, names checked against known ones."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.prompt.limits import PromptLimits
from pipeline.prompt.tags import extract_tags, remove_tags
from pipeline.request import HypernetRef, LoraRef

KNOWN = {"ghibli", "add_detail", "Film Grain"}
LIMITS = PromptLimits()


def scan(text, known=KNOWN, limits=LIMITS):
    return extract_tags(text, known, limits)


@pytest.mark.parametrize(
    ("text", "loras"),
    [
        ("<lora:ghibli>", (LoraRef("ghibli", 1.0, 1.0),)),
        ("<lora:ghibli:0.7>", (LoraRef("ghibli", 0.7, 0.7),)),
        ("<lora:ghibli:0.7:0.3>", (LoraRef("ghibli", 0.7, 0.3),)),
        ("<lora:ghibli:te=0.5:unet=0.2>", (LoraRef("ghibli", 0.5, 0.2),)),
        ("<lora:ghibli:te=0.5>", (LoraRef("ghibli", 0.5, 0.5),)),
        ("<lora:ghibli:0.8:unet=0>", (LoraRef("ghibli", 0.8, 0.0),)),
        ("<lyco:ghibli:-1>", (LoraRef("ghibli", -1.0, -1.0),)),
        ("<lora: ghibli : 0.5 >", (LoraRef("ghibli", 0.5, 0.5),)),
        ("<lora:Film Grain:0.4>", (LoraRef("Film Grain", 0.4, 0.4),)),
        ("<lora:GHIBLI:1>", (LoraRef("ghibli", 1.0, 1.0),)),
        (
            "a <lora:ghibli:0.7>, b <lora:add_detail:0.5>",
            (LoraRef("ghibli", 0.7, 0.7), LoraRef("add_detail", 0.5, 0.5)),
        ),
        ("<lora:ghibli:0.7> <lora:ghibli:.7>", (LoraRef("ghibli", 0.7, 0.7),)),
    ],
)
def test_lora_tags_give_refs(text, loras):
    result = scan(text)
    assert result.errors == ()
    assert result.loras == loras


def test_tags_are_cut_from_the_text_exactly_as_a1111_does():
    assert scan("a, <lora:ghibli:0.7>, (b:1.2)<lora:add_detail>").text == "a, , (b:1.2)"
    assert scan("(<lora:ghibli:1>)").text == "()"
    assert scan("a <lora:unknown:1> <foo:bar> b").text == "a   b"


def test_text_without_tags_is_unchanged():
    result = scan("  a (b:1.2) <not a tag> <x> ")
    assert result.text == "  a (b:1.2) <not a tag> <x> "
    assert result.loras == () and result.errors == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<lora:ghibly:0.7>", "unknown LoRA 'ghibly' in <lora:ghibly:0.7>: did you mean 'ghibli'?"),
        ("<lora:zzz:1>", "no LoRA by that name is installed"),
        ("<lora:ghibli:abc>", "weight 'abc' is not a number"),
        ("<lora:ghibli:nan>", "weight 'nan' is not a number"),
        ("<lora:ghibli:inf>", "weight 'inf' is not a number"),
        ("<lora:ghibli:3.5>", "weight 3.5 is out of range, use -3 to 3"),
        ("<lora:ghibli:1:-4>", "weight -4 is out of range"),
        ("<lora::1>", "the LoRA name is missing"),
        ("<lora:ghibli:1:1:4>", "too many values"),
        ("<lora:ghibli:dyn=4>", "unknown option dyn="),
        ("<lorra:ghibli:1>", "unknown tag <lorra:ghibli:1>: only <lora:name:weight> and"),
        (
            "<lora:ghibli:0.7> <lora:ghibli:0.5>",
            "LoRA 'ghibli' appears twice with different weights (0.7 and 0.5)",
        ),
        (
            "<lora:ghibli:0.7> <lora:ghibli:0.7:0.2>",
            "appears twice with different weights (0.7 and 0.7:0.2)",
        ),
    ],
)
def test_bad_tags_are_errors_that_say_what_to_do(text, message):
    result = scan(text)
    assert any(message in error for error in result.errors), result.errors


def test_no_known_loras_says_none_are_installed():
    assert "no LoRAs are installed yet" in scan("<lora:x:1>", known=set()).errors[0]


def test_more_loras_than_the_limit_is_an_error():
    limits = PromptLimits(max_loras=2)
    result = scan("<lora:ghibli> <lora:add_detail> <lora:Film Grain>", limits=limits)
    assert result.errors == ("3 LoRAs in one prompt, the limit is 2: remove some",)


def test_lora_weight_range_comes_from_the_limits():
    limits = PromptLimits(min_lora_weight=0, max_lora_weight=1)
    assert scan("<lora:ghibli:-0.1>", limits=limits).errors
    assert not scan("<lora:ghibli:1>", limits=limits).errors


def test_ambiguous_case_insensitive_name_is_not_guessed():
    result = scan("<lora:style:1>", known={"Style", "STYLE"})
    assert result.loras == ()
    assert "did you mean 'STYLE' or 'Style'?" in result.errors[0]


def test_names_are_only_looked_up_never_used_as_paths():
    result = scan("<lora:../../etc/passwd:1>")
    assert result.loras == ()
    assert "unknown LoRA '../../etc/passwd'" in result.errors[0]


def test_unfinished_tag_is_a_warning():
    assert "unfinished tag" in scan("a cat <lora:ghibli:0.7").warnings[0]


def test_remove_tags_lists_what_it_cut():
    assert remove_tags("x <lora:a:1>, <foo:b>") == ("x , ", ["<lora:a:1>", "<foo:b>"])


HYPERNETS = {"anime", "Furry_v2"}


def scan_hypernets(text, limits=LIMITS):
    return extract_tags(text, KNOWN, limits, HYPERNETS)


@pytest.mark.parametrize(
    ("text", "hypernets"),
    [
        ("<hypernet:anime>", (HypernetRef("anime", 1.0),)),
        ("<hypernet:anime:0.6>", (HypernetRef("anime", 0.6),)),
        ("<hypernet: furry_v2 : .5 >", (HypernetRef("Furry_v2", 0.5),)),
        ("<HYPERNET:anime:-1>", (HypernetRef("anime", -1.0),)),
        (
            "<hypernet:Furry_v2:0.3> a <lora:ghibli> <hypernet:anime:1>",
            (HypernetRef("Furry_v2", 0.3), HypernetRef("anime", 1.0)),
        ),
    ],
)
def test_hypernet_tags_give_refs_in_prompt_order(text, hypernets):
    result = scan_hypernets(text)
    assert result.errors == ()
    assert result.hypernets == hypernets


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<hypernet:anme:1>", "unknown hypernetwork 'anme' in <hypernet:anme:1>: did you mean"),
        ("<hypernet:anime:x>", "strength 'x' is not a number"),
        ("<hypernet:anime:4>", "strength 4 is out of range, use -3 to 3"),
        ("<hypernet::1>", "the hypernetwork name is missing"),
        ("<hypernet:anime:1:1>", "too many values, write <hypernet:name:strength>"),
        ("<hypernet:anime:1> <hypernet:anime:1>", "hypernetwork 'anime' appears twice"),
    ],
)
def test_bad_hypernet_tags_are_errors_that_say_what_to_do(text, message):
    result = scan_hypernets(text)
    assert any(message in error for error in result.errors), result.errors


def test_no_known_hypernetworks_says_none_are_installed():
    assert "no hypernetworks are installed yet" in scan("<hypernet:anime>").errors[0]


def test_more_hypernetworks_than_the_limit_is_an_error():
    result = scan_hypernets("<hypernet:anime> <hypernet:furry_v2>", PromptLimits(max_hypernets=1))
    assert result.errors == ("2 hypernetworks in one prompt, the limit is 1: remove some",)


NAMES = st.sampled_from(["anime", "ANIME", "furry_v2", "Furry_v2", "ghibli", "x", ""])
STRENGTHS = st.sampled_from(["", ":1", ":0.5", ":-2", ":9", ":nan", ":a", ":1:2", ":.7 "])
TAGS = st.builds(lambda kind, name, value: f"<{kind}:{name}{value}>",
                 st.sampled_from(["hypernet", "lora", "HyperNet"]), NAMES, STRENGTHS)  # fmt: skip
PIECES = st.lists(TAGS | st.sampled_from(["a cat", ", ", "(b:1.2)", "<", ">", " "]), max_size=8)


@settings(max_examples=300, deadline=None)
@given(PIECES)
def test_any_mix_of_tags_gives_checked_refs_or_errors(pieces):
    text = "".join(pieces)
    result = scan_hypernets(text)
    assert re.search(r"<hypernet:[^>]+>", result.text, re.IGNORECASE) is None
    if not result.errors:
        assert len(result.hypernets) <= LIMITS.max_hypernets
        assert len({ref.name for ref in result.hypernets}) == len(result.hypernets)
        for ref in result.hypernets:
            assert ref.name in HYPERNETS
            assert LIMITS.min_hypernet_strength <= ref.strength <= LIMITS.max_hypernet_strength
        named = [
            piece[1:-1].split(":")[1].strip().casefold()
            for piece in pieces
            if re.fullmatch(r"<hypernet:[^>]+>", piece, re.IGNORECASE)
        ]
        assert [ref.name.casefold() for ref in result.hypernets] == named
