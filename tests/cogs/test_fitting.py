"""The fitting helpers: escaped text cut on a safe boundary, lines, and embeds within Discord's
limits (the limits are Discord's documented ones, checked by the fake Discord's validation)."""

from __future__ import annotations

import re

import discord
from hypothesis import given, settings
from hypothesis import strategies as st

from cogs.fitting import ELLIPSIS, escape, fit, fit_embed, fit_escaped, fit_lines
from tests.fakediscord.validation import check_embeds

SPECIALS = list("\\*_~`|>[]()#-@<:")
TOKENS = ["<@123456789012345678>", "<#42>", "<:fox:987>", "<a:run:5>", "<t:1700000000:R>"]
COMBINING = ["e\u0301", "👍🏽", "👩\u200d💻", "\ufe0f"]

user_text = st.lists(
    st.one_of(st.sampled_from(SPECIALS), st.sampled_from(COMBINING), st.characters()),
    max_size=3000,
).map("".join)
"""Any unicode, weighted towards what Markdown, mentions and escaping care about."""


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


@settings(max_examples=200, deadline=None)
@given(user_text, st.integers(min_value=2, max_value=2000))
def test_escaped_text_fits_and_shows_the_start_of_the_text(text: str, limit: int) -> None:
    shown = fit_escaped(text, limit)
    assert len(shown) <= limit
    if shown.endswith(ELLIPSIS) and len(escape(text)) > limit:
        shown = shown[: -len(ELLIPSIS)]
    assert text.startswith(unescape(shown)), "no escape pair was cut in half"
    assert not re.search(r"(?<!\\)(\\\\)*\\$", shown), "no lone backslash at the end"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([*TOKENS, "ab ", "é "]), max_size=400).map("".join))
def test_a_cut_never_splits_a_mention_or_an_emoji(text: str) -> None:
    shown = fit(text, 200)
    assert len(shown) <= 200
    assert not re.search(r"<[^>]*$", shown.removesuffix(ELLIPSIS)), "half a token left"


def test_a_cut_keeps_a_combining_mark_with_its_letter() -> None:
    assert fit("abe\u0301cd", 4) == "ab…"
    assert fit("a\\_b", 3) == "a…"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(user_text.map(lambda text: text.replace("\n", " ")), max_size=60),
    st.integers(min_value=30, max_value=4096),
)
def test_lines_fit_and_say_how_many_were_left_out(lines: list[str], limit: int) -> None:
    text = fit_lines(lines, limit)
    assert len(text) <= limit
    parts = text.split("\n") if lines else []
    left = 0
    if parts and (match := re.fullmatch(r"… and (\d+) more", parts[-1])):
        parts, left = parts[:-1], int(match[1])
    assert len(parts) + left == len(lines)
    assert bool(parts) == bool(lines), "the first line always shows"
    for shown, line in zip(parts, lines, strict=False):
        assert shown == line or line.startswith(shown.removesuffix(ELLIPSIS))


@settings(max_examples=100, deadline=None)
@given(
    st.text(max_size=300),
    st.text(max_size=5000),
    st.lists(st.tuples(st.text(max_size=300), st.text(max_size=2000)), max_size=30),
    st.text(max_size=2500),
)
def test_any_embed_is_cut_to_discords_limits(
    title: str, description: str, fields: list[tuple[str, str]], footer: str
) -> None:
    embed = discord.Embed(title=title or None, description=description or None)
    for name, value in fields:
        embed.add_field(name=name, value=value)
    embed.set_footer(text=footer or None)
    check_embeds([fit_embed(embed).to_dict()])  # type: ignore[list-item]


def test_short_fields_stay_whole_when_long_ones_give_way() -> None:
    embed = discord.Embed(title="t", description="d" * 4000)
    for index in range(10):
        embed.add_field(name=f"f{index}", value="v" * 1000)
    embed.add_field(name="seed", value="42")
    fitted = fit_embed(embed)
    assert fitted.fields[-1].value == "42"
    assert fitted.description is not None and fitted.description.endswith(ELLIPSIS)
    check_embeds([fitted.to_dict()])  # type: ignore[list-item]
