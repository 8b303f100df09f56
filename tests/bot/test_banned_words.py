"""Banned words are found however the prompt dresses them up, and only as whole words."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.banned_words import find_banned, forms, words_of

BANNED = ("nude", "gore", "blood bath")


@pytest.mark.parametrize(
    "prompt",
    [
        "a nude statue",
        "nude_body, masterpiece",
        "two nudes on a beach",
        "n u d e woman",
        "n.u.d.e",
        "n-u-d-e",
        "nu\u200bde",  # zero-width space
        "nu\u00adde",  # soft hyphen
        "\u2060nude\ufeff",  # word joiner, BOM
        "\uff4e\uff55\uff44\uff45 portrait",  # fullwidth
        "NUDE",
        "NudeBody",
        "n\u0308u\u0301de",  # combining marks
        "(nude:1.3)",
        "[nude|clothed]",
        "a|nude|b",
        "Nudes",
    ],
)
def test_a_disguised_banned_word_is_found(prompt: str) -> None:
    assert find_banned([prompt], BANNED) == ["nude"]


@pytest.mark.parametrize(
    "prompt",
    ["denuded landscape", "a prelude", "nudebody", "a nudist colony", "gorgeous", "bloodbath"],
)
def test_a_word_inside_another_word_is_not_banned(prompt: str) -> None:
    assert find_banned([prompt], BANNED) == []


def test_phrases_plurals_and_separate_texts() -> None:
    assert find_banned(["a blood_baths scene"], BANNED) == ["blood bath"]
    assert find_banned(["blood", "bath"], BANNED) == [], "two texts do not run into each other"
    assert find_banned(["bodies"], ["body"]) == ["body"]
    assert find_banned(["body"], ["bodies"]) == ["bodies"]
    assert find_banned(["a nude"], ["NUDES"]) == ["NUDES"], "the word as the admin wrote it"
    assert find_banned(["a fox"], ["", "  "]) == []


def test_words_are_plain() -> None:
    assert words_of("Ｈｅｌｌｏ_Wörld-42") == ["hello", "world", "42"]
    assert forms("body") >= {"body", "bodies", "bodys"}


OBFUSCATIONS = st.sampled_from(
    ["zero_width", "fullwidth", "spaced", "separators", "case", "plural", "marks"]
)
ZERO_WIDTH = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"])
SEPARATORS = st.sampled_from(["_", "-", ".", "|", " ", ",", "/", "~", ":"])


def disguise(word: str, how: str, data: st.DataObject) -> str:
    """`word` disguised in one way of the family the policy must see through."""
    if how == "zero_width":
        return "".join(char + data.draw(ZERO_WIDTH) for char in word)
    if how == "fullwidth":
        return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalpha() else c for c in word)
    if how == "spaced":
        return " ".join(word)
    if how == "separators":
        return data.draw(SEPARATORS).join(word)
    if how == "case":
        flips = data.draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
        return "".join(c.upper() if up else c for c, up in zip(word, flips, strict=True))
    if how == "plural":
        return word + "s"
    return "".join(char + "\u0301" for char in word)  # marks


@settings(max_examples=300, deadline=None)
@given(
    word=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10),
    ways=st.lists(OBFUSCATIONS, min_size=1, max_size=3, unique=True),
    before=st.sampled_from(["", "a ", "photo of a ", "(", "masterpiece, "]),
    after=st.sampled_from(["", " girl", ", best quality", ":1.2)", "!"]),
    data=st.data(),
)
def test_any_disguise_of_a_banned_word_is_refused(
    word: str, ways: list[str], before: str, after: str, data: st.DataObject
) -> None:
    # Spacing out a word then adding a plural is no longer one word: apply plural first.
    disguised = word
    for how in sorted(ways, key=lambda how: how != "plural"):
        disguised = disguise(disguised, how, data)
    assert find_banned([before + disguised + after], [word]) == [word], disguised


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=6000),
    words=st.lists(st.text(min_size=1, max_size=20), max_size=50),
)
def test_any_text_is_checked_quickly_without_crashing(text: str, words: list[str]) -> None:
    started = time.perf_counter()
    found = find_banned([text], words)
    assert time.perf_counter() - started < 0.5
    assert set(found) <= set(words)


def test_a_long_prompt_against_a_full_word_list_stays_fast() -> None:
    prompt = "n u d e " * 700 + "a b " * 500 + "word " * 500
    words = [f"banned{n} phrase" for n in range(200)]
    started = time.perf_counter()
    find_banned([prompt], words)
    assert time.perf_counter() - started < 0.5
