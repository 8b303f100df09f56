"""Paged lists (`/history`, `/favourites`): one embed per entry, Previous/Next/Publish buttons.

The buttons are `DynamicItem`s whose custom_id carries the list, its owner, the page and what
the click does (`dc:p:<list>:<owner>:<page>:<action>`), so paging works after a restart. A page
is read from the App's gallery; the embeds are built by pure functions from plain `Entry`
values.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
from PIL import Image

from bot.app import Listed, Listing, Viewer
from cogs.checks import ServedItem, here_is_nsfw
from cogs.client import DreamcordClient
from cogs.errors import Refused, guarded
from cogs.fitting import fit_embed, fit_escaped
from cogs.grid import compose_grid

Interaction = discord.Interaction[DreamcordClient]

PAGE_SIZE = 5
"""Entries per page: one embed each, well under Discord's 10 embeds and 6,000 characters."""
PROMPT_SHOWN = 300
THUMBNAIL_SIDE = 160

HISTORY, FAVOURITES = "h", "f"
TITLES = {HISTORY: "Your history", FAVOURITES: "Your favourites"}
EMPTY = {
    HISTORY: "You have no images yet: make some with /imagine.",
    FAVOURITES: "You have no favourites yet: click ⭐ Favourite under a result.",
}

HIDDEN = "not shown here: made in DMs, on another server or in an NSFW channel"
"""What a published list says of an entry its owner could not post in this channel."""

TURN_PRIVATE, TURN_PUBLIC, PUBLISH = "e", "g", "x"
"""Actions: page an ephemeral list (owner only), page a public one (anyone), publish a page."""


@dataclass(frozen=True)
class Entry:
    """One line of a list: a generation (history) or one image of it (favourites)."""

    generation_id: int
    title: str
    prompt: str
    seeds: tuple[int, ...]
    size: str
    created_at: str
    link: str | None
    image_paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Page:
    """What one page shows; `number` is 0-based."""

    kind: str
    owner_id: int
    number: int
    entries: tuple[Entry, ...]
    has_next: bool
    total: int | None = None


def jump_link(guild_id: int | None, channel_id: int | None, message_id: int | None) -> str | None:
    """The URL that opens a message in Discord, when all three ids are known."""
    if channel_id is None or message_id is None:
        return None
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def excerpt(text: str, limit: int = PROMPT_SHOWN) -> str:
    """A prompt made inert (no markdown, no mentions), then shortened to `limit` characters."""
    return fit_escaped(" ".join(text.split()) or "(empty prompt)", limit)


def seeds_text(seeds: Sequence[int]) -> str:
    if not seeds:
        return "-"
    return str(seeds[0]) if len(seeds) == 1 else ", ".join(str(seed) for seed in seeds)


def page_header(page: Page) -> str:
    """The message content above the embeds: which list and which page."""
    if page.total is not None:
        pages = max(1, -(-page.total // PAGE_SIZE))
        where = f"page {page.number + 1} of {pages}"
    else:
        where = f"page {page.number + 1}"
    return f"**{TITLES[page.kind]}** · {where}"


def page_embeds(page: Page, thumbnails: Sequence[str | None] = ()) -> list[discord.Embed]:
    """One embed per entry; `thumbnails[i]` is the attachment file name for entry i, if any."""
    embeds = []
    for index, entry in enumerate(page.entries):
        embed = discord.Embed(
            title=entry.title,
            description=excerpt(entry.prompt),
            url=entry.link,
            colour=discord.Colour.blurple(),
        )
        embed.add_field(name="Seed", value=seeds_text(entry.seeds))
        embed.add_field(name="Size", value=entry.size)
        embed.add_field(
            name="Open", value=f"[result message]({entry.link})" if entry.link else "not posted"
        )
        embed.set_footer(text=f"/show id:{entry.generation_id} · {entry.created_at[:16]} UTC")
        name = thumbnails[index] if index < len(thumbnails) else None
        if name:
            embed.set_thumbnail(url=f"attachment://{name}")
        embeds.append(fit_embed(embed))
    return embeds


def thumbnail_png(paths: Sequence[Path], side: int = THUMBNAIL_SIDE) -> bytes:
    """A small grid of the images at `paths` (blocking file I/O: run it in a thread)."""
    images = [Image.open(path).convert("RGB") for path in paths]
    grid = compose_grid(images, labels=False)
    grid.thumbnail((side, side))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()


def page_files(page: Page) -> tuple[list[discord.File], list[str | None]]:
    """Thumbnail attachments for a page and the file name each entry refers to."""
    files: list[discord.File] = []
    names: list[str | None] = []
    for index, entry in enumerate(page.entries):
        paths = [path for path in entry.image_paths if path.is_file()]
        if not paths:
            names.append(None)
            continue
        name = f"thumb-{index}-{entry.generation_id}.png"
        files.append(discord.File(io.BytesIO(thumbnail_png(paths)), name))
        names.append(name)
    return files, names


def page_view(page: Page, public: bool) -> discord.ui.View:
    """Previous and Next (disabled at the ends), and Publish on a private list."""
    view = discord.ui.View(timeout=None)
    turn = TURN_PUBLIC if public else TURN_PRIVATE
    previous = PageButton(
        page.kind, page.owner_id, max(0, page.number - 1), turn, label="◀ Previous"
    )
    previous.item.disabled = page.number == 0
    following = PageButton(page.kind, page.owner_id, page.number + 1, turn, label="Next ▶")
    following.item.disabled = not page.has_next
    view.add_item(previous)
    view.add_item(following)
    if not public:
        view.add_item(
            PageButton(
                page.kind,
                page.owner_id,
                page.number,
                PUBLISH,
                label="Publish",
                style=discord.ButtonStyle.primary,
            )
        )
    return view


class PageButton(
    ServedItem,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"dc:p:(?P<kind>[hf]):(?P<owner>[0-9]{1,20}):(?P<page>[0-9]{1,5}):(?P<action>[egx])",
):
    """Previous, Next or Publish under a list; the Account cog does the work."""

    def __init__(
        self,
        kind: str,
        owner_id: int,
        page: int,
        action: str,
        *,
        label: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label, style=style, custom_id=f"dc:p:{kind}:{owner_id}:{page}:{action}"
            )
        )
        self.kind = kind
        self.owner_id = owner_id
        self.page = page
        self.action = action

    @classmethod
    async def from_custom_id(  # type: ignore[override]  # discord.py hands over the Button
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> PageButton:
        return cls(
            match["kind"],
            int(match["owner"]),
            int(match["page"]),
            match["action"],
            label=item.label,
            style=item.style,
        )

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        await guarded(
            interaction, turn_page(interaction, self.kind, self.owner_id, self.page, self.action)
        )


async def turn_page(
    interaction: Interaction, kind: str, owner_id: int, number: int, action: str
) -> None:
    """A Previous, Next or Publish click under a list (see cogs.pages)."""
    if action != TURN_PUBLIC and interaction.user.id != owner_id:
        raise Refused(f"only <@{owner_id}> can use these buttons: try /{_command(kind)}")
    if action == PUBLISH:
        await interaction.response.defer(thinking=True)
        page = await _load_page(interaction, kind, owner_id, number, public=True)
        await _post_page(interaction, page, public=True)
        return
    await interaction.response.defer()
    page = await _load_page(interaction, kind, owner_id, number, action == TURN_PUBLIC)
    files, names = await asyncio.to_thread(page_files, page)
    await interaction.edit_original_response(
        content=page_header(page) if page.entries else EMPTY[kind],
        embeds=page_embeds(page, names),
        attachments=files,
        view=page_view(page, action == TURN_PUBLIC),
        allowed_mentions=discord.AllowedMentions.none(),
    )


async def send_list(interaction: Interaction, kind: str, public: bool) -> None:
    """The first page of the user's list, after the command deferred."""
    page = await _load_page(interaction, kind, interaction.user.id, 0, public)
    await _post_page(interaction, page, public)


async def _post_page(interaction: Interaction, page: Page, public: bool) -> None:
    if not page.entries:
        await interaction.followup.send(EMPTY[page.kind], ephemeral=not public)
        return
    files, names = await asyncio.to_thread(page_files, page)
    await interaction.followup.send(
        page_header(page),
        embeds=page_embeds(page, names),
        files=files,
        view=page_view(page, public),
        ephemeral=not public,
        allowed_mentions=discord.AllowedMentions.none(),
    )


async def _load_page(
    interaction: Interaction, kind: str, owner_id: int, number: int, public: bool
) -> Page:
    """Page `number` of a list from the gallery, as the paged message shows it; a public list
    shows only what its owner may post in this channel (`App.gallery` decides), and leaves
    flagged images out of its thumbnails where the safety mode would not show them as they are.
    """
    app = interaction.client.app
    nsfw = here_is_nsfw(interaction)
    published = Viewer(owner_id, interaction.guild_id, nsfw)
    listing = await app.gallery.page(
        kind == FAVOURITES, owner_id, number, PAGE_SIZE, published if public else None
    )
    hide_flagged = public and not await app.safety.shows_as_is(interaction.guild_id, nsfw)
    return _page(kind, owner_id, listing, hide_flagged)


def _page(kind: str, owner_id: int, listing: Listing, hide_flagged: bool = False) -> Page:
    entries = []
    for item in listing.items:
        generation = item.generation
        if kind == FAVOURITES:
            title = f"Image {item.indexes[0] + 1} of generation {generation.id}"
        else:
            title = f"Generation {generation.id}"
        if item.hidden:  # no thumbnails, prompt or link: nothing of it may be posted here
            entries.append(_hidden_entry(item, title))
            continue
        paths = tuple(
            path
            for index, path in zip(item.indexes, item.image_paths, strict=True)
            if not (hide_flagged and generation.images[index].flagged)
        )
        entries.append(
            Entry(
                generation_id=generation.id,
                title=title,
                prompt=generation.request.prompt,
                seeds=tuple(generation.images[i].seed for i in item.indexes),
                size=f"{generation.request.width}x{generation.request.height}",
                created_at=generation.created_at,
                link=jump_link(generation.guild_id, generation.channel_id, generation.message_id),
                image_paths=paths,
            )
        )
    return Page(kind, owner_id, listing.number, tuple(entries), listing.has_next, listing.total)


def _hidden_entry(item: Listed, title: str) -> Entry:
    generation = item.generation
    return Entry(generation.id, title, HIDDEN, (), "-", generation.created_at, None)


def _command(kind: str) -> str:
    return "history" if kind == HISTORY else "favourites"
