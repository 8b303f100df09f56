"""Discord's text limits, and user text made to fit them: escaped first, then cut where it is safe.

Escaping can double a text (`_` becomes `\\_`), so a budget is always checked on the escaped
text. A cut never splits an escape pair, a mention, channel, role, emoji or timestamp token
(`<@123>`, `<:fox:123>`), a code point from the combining marks or joiners after it, and it ends
with an ellipsis so the reader sees that something was left out. Every message, embed, modal,
choice and button text the cogs build goes through these helpers, so Discord never answers 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import discord

MESSAGE = 2000
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
FIELD_NAME = 256
FIELD_VALUE = 1024
FOOTER = 2048
AUTHOR = 256
EMBED_TOTAL = 6000
EMBED_FIELDS = 25
MODAL_TITLE = 45
INPUT_LABEL = 45
INPUT_PLACEHOLDER = 100
INPUT_VALUE = 4000
CHOICE = 100
"""An autocomplete choice's or select option's name, value and description."""
BUTTON_LABEL = 80
COMPONENTS = 25
"""Five action rows of five buttons."""

ELLIPSIS = "…"
MARKDOWN = ("\\", "*", "_", "~", "`", "|", ">", "[", "]", "(", ")", "#", "-", "@", "<")
"""Characters that format, quote, link or mention; the backslash first, so escapes stay whole."""

_UNIT = re.compile(
    r"\\."  # an escape pair
    r"|<(?:@[!&]?\d+|#\d+|a?:\w+:\d+|t:-?\d+(?::\w)?|/[\w -]+:\d+)>"  # a token Discord renders
    r"|.(?:[\u0300-\u036f\u1ab0-\u1aff\u20d0-\u20ff\ufe00-\ufe0f\U0001f3fb-\U0001f3ff"
    r"\U000e0020-\U000e007f]|\u200d.)*",  # a code point with its marks and joined parts
    re.DOTALL,
)


def escape(text: str) -> str:
    """User text made inert: no markdown, no mentions, no masked links."""
    for mark in MARKDOWN:
        text = text.replace(mark, "\\" + mark)
    return text


def fit(text: str, limit: int, marker: str = ELLIPSIS) -> str:
    """`text` if it fits in `limit` characters, else its longest safe start and `marker`."""
    if len(text) <= limit:
        return text
    room = limit - len(marker)
    end = 0
    for unit in _UNIT.finditer(text):
        if unit.end() > room:
            break
        end = unit.end()
    return text[:end] + marker


def fit_escaped(text: str, limit: int) -> str:
    """User text escaped, then fitted: what Discord shows is exactly the text, or its start."""
    return fit(escape(text), limit)


def more_line(left: int) -> str:
    return f"… and {left} more"


def fit_lines(
    lines: Sequence[str],
    limit: int,
    more: Callable[[int], str] = more_line,
    max_lines: int | None = None,
) -> str:
    """Whole lines joined while they fit in `limit` (and `max_lines`), then `more(how many are
    left)`. A single line longer than the room is cut rather than dropped, so one always shows.
    """
    reserve = len(more(len(lines))) + 1
    shown = len(lines) if max_lines is None else min(max_lines, len(lines))
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines[:shown]):
        last = index == len(lines) - 1
        line = fit(line, limit if last and not kept else limit - reserve)
        cost = len(line) + (1 if kept else 0)
        if used + cost > limit - (0 if last else reserve):
            shown = index
            break
        kept.append(line)
        used += cost
    if shown < len(lines):
        kept.append(more(len(lines) - shown))
    return "\n".join(kept)


def fit_embed(embed: discord.Embed) -> discord.Embed:
    """The embed cut to Discord's limits: each part, 25 fields, and 6,000 characters in all.

    When the parts together are too long, the longest of the description and the field values
    give way first (each is cut to the same length), so short fields stay whole.
    """
    if embed.title:
        embed.title = fit(embed.title, EMBED_TITLE)
    if embed.author.name:
        embed.set_author(
            name=fit(embed.author.name, AUTHOR),
            url=embed.author.url,
            icon_url=embed.author.icon_url,
        )
    if embed.footer.text:
        embed.set_footer(text=fit(embed.footer.text, FOOTER), icon_url=embed.footer.icon_url)
    while len(embed.fields) > EMBED_FIELDS:
        embed.remove_field(EMBED_FIELDS)
    names = [fit(field.name or "-", FIELD_NAME) for field in embed.fields]
    values = [fit(field.value or "-", FIELD_VALUE) for field in embed.fields]
    description = fit(embed.description, EMBED_DESCRIPTION) if embed.description else ""
    fixed = sum(map(len, names)) + len(embed.title or "")
    fixed += len(embed.footer.text or "") + len(embed.author.name or "")
    cap = _shared_cap([len(description), *map(len, values)], EMBED_TOTAL - fixed)
    if description:
        embed.description = fit(description, cap)
    for index, field in enumerate(embed.fields):
        embed.set_field_at(
            index, name=names[index], value=fit(values[index], cap), inline=bool(field.inline)
        )
    return embed


def _shared_cap(lengths: Sequence[int], budget: int) -> int:
    """The largest length c such that the lengths, each cut to c, add up to at most `budget`."""
    low, high = 1, max(lengths, default=1)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(length, middle) for length in lengths) <= budget:
            low = middle
        else:
            high = middle - 1
    return low
