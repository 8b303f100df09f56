"""How library entries, refusals, scans and the change history look in Discord."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import discord

from bot.app import LibraryKind, ScanOutcome, size_text
from cogs.fitting import EMBED_DESCRIPTION, fit, fit_embed, fit_escaped, fit_lines

MAX_SCAN_LINES = 30
LINE_SHOWN = 300


def entry_embed(kind: LibraryKind, entry: Any, title: str) -> discord.Embed:
    """Everything known about an entry: the CLI's `info` lines, as embed fields."""
    colour = discord.Colour.green() if entry.enabled else discord.Colour.dark_grey()
    embed = discord.Embed(title=title, colour=colour)
    embed.add_field(name="name", value=f"`{entry.name}`")
    embed.add_field(name="enabled", value="yes" if entry.enabled else "no")
    embed.add_field(name="base", value=str(entry.base))
    for label, value in kind.details(entry):
        embed.add_field(
            name=label, value=fit_escaped(value or "-", 1024), inline=label != "triggers"
        )
    embed.add_field(name="size", value=size_text(entry.size_bytes))
    embed.add_field(name="source", value=str(entry.source))
    embed.set_footer(text=f"sha256 {entry.sha256} · added {entry.added_at[:16]} UTC")
    return fit_embed(embed)


def entry_line(kind: LibraryKind, entry: Any) -> str:
    """One list line: a mark, the name, then the CLI table's other columns."""
    row = kind.row(entry)
    mark = "✅" if entry.enabled else "⛔"
    rest = " · ".join(
        f"{column.lower()} {value}" for column, value in zip(kind.columns[1:], row[1:], strict=True)
    )
    disabled = " (disabled)" if not entry.enabled else ""
    return fit(f"{mark} `{entry.name}`{disabled} · {rest} · {size_text(entry.size_bytes)}", 400)


def refusal_embed(what: str, label: str, reason: str) -> discord.Embed:
    embed = discord.Embed(
        title=f"Not added: {label}",
        description=f"⚠️ {reason}",
        colour=discord.Colour.red(),
    ).set_footer(text=f"Nothing was changed in the {what} library.")
    return fit_embed(embed)


def scan_embed(what: str, folder: object, outcomes: Sequence[ScanOutcome]) -> discord.Embed:
    """What a drop-folder scan added, left or found already there."""
    embed = discord.Embed(title=f"{what} drop folder scanned", colour=discord.Colour.blurple())
    if not outcomes:
        embed.description = f"No .safetensors files in `{folder}`."
    else:
        marks = {True: "⛔", False: "✅"}
        lines = [
            f"{marks[o.refused] if o.added or o.refused else '♻️'} `{o.file}`: {o.message}"
            for o in outcomes
        ]
        shown = [fit(line, LINE_SHOWN) for line in lines]
        embed.description = fit_lines(shown, EMBED_DESCRIPTION, max_lines=MAX_SCAN_LINES)
    embed.set_footer(text=f"Drop folder: {folder}")
    return fit_embed(embed)


def history_embed(what: str, entries: Sequence[Any]) -> discord.Embed:
    """A library's recent changes on this server, one line each."""
    embed = discord.Embed(title=f"{what} library: recent changes", colour=discord.Colour.blurple())
    lines = [_history_line(entry) for entry in entries]
    embed.description = fit_lines(lines, EMBED_DESCRIPTION) if lines else "No changes recorded yet."
    return fit_embed(embed)


def _history_line(entry: Any) -> str:
    detail = ", ".join(
        f"{key} {value}" for key, value in entry.detail.items() if value and key != "sha256"
    )
    target = f" `{entry.target}`" if entry.target else ""
    who = f"<@{entry.user_id}>" if entry.user_id else "someone"
    return f"`{entry.created_at[:16]}` {who} **{entry.action}**{target}" + (
        f" ({fit(detail, 150)})" if detail else ""
    )
