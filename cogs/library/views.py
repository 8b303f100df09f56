"""Short-lived views of the library commands: a paged list, and the removal question."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import discord

from bot.app import AuditedLibrary, size_text
from cogs.checks import actor_of, is_library_admin
from cogs.client import DreamcordClient
from cogs.errors import Refused, answer_error
from cogs.fitting import EMBED_DESCRIPTION, fit_embed, fit_escaped, fit_lines
from cogs.library.embeds import entry_line

LIST_PAGE_SIZE = 10
LIST_TIMEOUT_S = 600.0
CONFIRM_TIMEOUT_S = 60.0


class ListView(discord.ui.View):
    """Previous/Next over an ephemeral list; short-lived, as the ephemeral message is."""

    def __init__(
        self,
        library: AuditedLibrary,
        entries: Sequence[Any],
        owner_id: int,
        search: str | None,
        hidden: int,
    ) -> None:
        super().__init__(timeout=LIST_TIMEOUT_S)
        self.kind, self.entries, self.owner_id = library.kind, entries, owner_id
        self.search, self.hidden = search, hidden
        self.page = 0
        self.pages = max(1, -(-len(entries) // LIST_PAGE_SIZE))
        self._sync_buttons()

    def page_embed(self) -> discord.Embed:
        what = self.kind.what
        title = f"{what}s" + (f" matching “{fit_escaped(self.search, 100)}”" if self.search else "")
        start = self.page * LIST_PAGE_SIZE
        lines = [
            entry_line(self.kind, entry) for entry in self.entries[start : start + LIST_PAGE_SIZE]
        ]
        embed = discord.Embed(title=title, colour=discord.Colour.blurple())
        embed.description = fit_lines(lines, EMBED_DESCRIPTION) if lines else f"No {what}s found."
        footer = f"{len(self.entries)} shown"
        if self.hidden:
            footer += f" · {self.hidden} disabled hidden (show_disabled: True)"
        if self.pages > 1:
            footer += f" · page {self.page + 1} of {self.pages} · buttons work for 10 minutes"
        embed.set_footer(text=footer)
        return fit_embed(embed)

    def _sync_buttons(self) -> None:
        self.previous.disabled = self.page == 0
        self.next.disabled = self.page >= self.pages - 1

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.owner_id

    @discord.ui.button(label="◀ Previous", style=discord.ButtonStyle.secondary)
    async def previous(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        await self._turn(interaction, -1)

    @discord.ui.button(label="Next ▶", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await self._turn(interaction, 1)

    async def _turn(self, interaction: discord.Interaction, step: int) -> None:
        self.page = min(max(0, self.page + step), self.pages - 1)
        self._sync_buttons()
        await interaction.response.edit_message(embed=self.page_embed(), view=self)

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await answer_error(interaction, error)


def removal_question(library: AuditedLibrary, entry: Any) -> str:
    return (
        f"Remove {library.kind.what} `{entry.name}` ({size_text(entry.size_bytes)}) and "
        f"delete its file? Prompts using it will be refused. This cannot be undone.\n"
        f"-# These buttons work for {CONFIRM_TIMEOUT_S:.0f} seconds."
    )


class ConfirmRemove(discord.ui.View):
    """Remove / Keep under a removal question; only the asking admin can answer, within 60 s."""

    def __init__(
        self,
        library: AuditedLibrary,
        asked: discord.Interaction[DreamcordClient],
        name: str,
    ) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT_S)
        self.library, self.asked, self.name = library, asked, name

    async def interaction_check(  # type: ignore[override]
        self, interaction: discord.Interaction[DreamcordClient]
    ) -> bool:
        if interaction.user.id != self.asked.user.id or not is_library_admin(interaction):
            raise Refused("only the admin who asked can confirm this removal")
        return True

    @discord.ui.button(label="Remove", style=discord.ButtonStyle.danger)
    async def confirm(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        self.stop()
        await interaction.response.defer()
        entry = await self.library.remove(self.name, actor_of(interaction))
        text = f"Removed {self.library.kind.what} `{entry.name}` and deleted its file."
        await interaction.edit_original_response(content=text, view=None)

    @discord.ui.button(label="Keep", style=discord.ButtonStyle.secondary)
    async def keep(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        self.stop()
        await interaction.response.edit_message(
            content=f"Kept {self.library.kind.what} `{self.name}`.", view=None
        )

    async def on_timeout(self) -> None:
        with contextlib.suppress(discord.HTTPException):
            await self.asked.edit_original_response(
                content=f"Not removed: no answer within {CONFIRM_TIMEOUT_S:.0f} seconds.",
                view=None,
            )

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await answer_error(interaction, error)
