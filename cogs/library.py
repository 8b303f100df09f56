"""`/lora`, `/embedding` and `/hypernetwork ...`: admins manage the libraries from Discord.

The verbs are the CLI's (`bot.cli.lora`), on the same `bot.library` classes: add (an attachment
or an https link from an allowed host), list, info, rename, enable, disable, remove (after a
confirmation), scan (the drop folder) and history (this server's audit log). Every verb is for
admins, checked in code; every change is written to the audit log. After a LoRA is added, a
preview at weights 0, 0.5 and 1 is queued at low priority and posted in the channel when done.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.cli.embedding import EMBEDDINGS
from bot.cli.hypernetwork import HYPERNETWORKS
from bot.cli.lora import LORAS, LibraryCommand
from bot.downloads import DEFAULT_HOSTS, download
from bot.library import SUFFIX, TEMP_PREFIX, Source, safe_filename
from bot.previews import PREVIEW_WEIGHTS, LoraPreviews, preview_grid
from bot.service import Origin
from cogs.checks import is_admin
from cogs.errors import Refused, answer_error
from pipeline.errors import UserError

if TYPE_CHECKING:
    from bot.discord_bot import DreamcordBot
    from bot.library import Library

log = logging.getLogger(__name__)

MIB = 1024**2
PROGRESS_INTERVAL_S = 2.5
"""Discord allows about one edit per 2-3 s per message; the latest byte count wins."""
LIST_PAGE_SIZE = 10
LIST_TIMEOUT_S = 600.0
CONFIRM_TIMEOUT_S = 60.0
HISTORY_SHOWN = 15
HISTORY_PAGES = 8
"""Audit pages (25 entries each) read to find this library's latest changes."""
MAX_CHOICES = 25
MAX_SCAN_LINES = 30


@dataclass
class DownloadRules:
    """Where `add url:` may fetch from.

    Production keeps the defaults (https only; Civitai and Hugging Face). The end-to-end tests
    replace this object on the loaded cog so the fake server's local http CDN can be used.
    """

    allowed_hosts: tuple[str, ...] = DEFAULT_HOSTS
    require_https: bool = True


@dataclass
class _Progress:
    """The latest byte count of a download, shown by `_show_progress`."""

    done: int = 0
    total: int | None = None
    shown: int = -1
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def update(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        self.changed.set()


def size_text(size: int) -> str:
    return f"{size / MIB:.1f} MiB" if size >= MIB else f"{size / 1024:.0f} KiB"


def filter_names(names: Sequence[str], typed: str) -> list[app_commands.Choice[str]]:
    """At most 25 names containing `typed` (any case), those starting with it first."""
    typed = typed.strip().lower()
    hits = [name for name in names if typed in name.lower()]
    hits.sort(key=lambda name: (not name.lower().startswith(typed), name.lower()))
    return [app_commands.Choice(name=name, value=name) for name in hits[:MAX_CHOICES]]


def entry_embed(kind: LibraryCommand, entry: Any, title: str) -> discord.Embed:
    """Everything known about an entry: the CLI's `info` lines, as embed fields."""
    colour = discord.Colour.green() if entry.enabled else discord.Colour.dark_grey()
    embed = discord.Embed(title=title[:256], colour=colour)
    embed.add_field(name="name", value=f"`{entry.name}`")
    embed.add_field(name="enabled", value="yes" if entry.enabled else "no")
    embed.add_field(name="base", value=str(entry.base))
    for label, value in kind.details(entry):
        embed.add_field(name=label, value=(value or "-")[:1024], inline=label != "triggers")
    embed.add_field(name="size", value=size_text(entry.size_bytes))
    embed.add_field(name="source", value=str(entry.source))
    embed.set_footer(text=f"sha256 {entry.sha256} · added {entry.added_at[:16]} UTC")
    return embed


def entry_line(kind: LibraryCommand, entry: Any) -> str:
    """One list line: a mark, the name, then the CLI table's other columns."""
    row = kind.row(entry)
    mark = "✅" if entry.enabled else "⛔"
    rest = " · ".join(
        f"{column.lower()} {value}" for column, value in zip(kind.columns[1:], row[1:], strict=True)
    )
    disabled = " (disabled)" if not entry.enabled else ""
    return f"{mark} `{entry.name}`{disabled} · {rest} · {size_text(entry.size_bytes)}"[:400]


def refusal_embed(what: str, label: str, reason: str) -> discord.Embed:
    return discord.Embed(
        title=f"Not added: {label}"[:256],
        description=f"⚠️ {reason}"[:4096],
        colour=discord.Colour.red(),
    ).set_footer(text=f"Nothing was changed in the {what} library.")


class LibraryCommands(commands.GroupCog):
    """What the library groups share; a subclass names its library and adds `add`."""

    kind: ClassVar[LibraryCommand]

    def __init__(self, bot: DreamcordBot) -> None:
        self.bot = bot
        self.downloads = DownloadRules()
        self._tasks: set[asyncio.Task[None]] = set()
        super().__init__()

    @property
    def library(self) -> Library[Any]:
        raise NotImplementedError

    async def cog_unload(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def interaction_check(  # type: ignore[override]
        self, interaction: discord.Interaction[DreamcordBot]
    ) -> bool:
        """`default_permissions` is only a default server admins can change: check in code."""
        if not is_admin(interaction, self.bot.settings):
            raise Refused(
                f"only server admins (Manage Server) can manage the {self.kind.what} library"
            )
        return True

    # --- verbs shared by every library ---

    @app_commands.command(name="list", description="List the library, with enabled/disabled")
    @app_commands.describe(
        search="only names containing this text", show_disabled="include disabled entries"
    )
    async def list_entries(
        self,
        interaction: discord.Interaction[DreamcordBot],
        search: app_commands.Range[str, 0, 64] | None = None,
        show_disabled: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        entries = await self.library.list(search or None)
        hidden = 0 if show_disabled else sum(1 for entry in entries if not entry.enabled)
        shown = [entry for entry in entries if show_disabled or entry.enabled]
        view = ListView(self.kind, shown, interaction.user.id, search, hidden)
        buttons: dict[str, Any] = {"view": view} if view.pages > 1 else {}
        await interaction.edit_original_response(embed=view.page_embed(), **buttons)

    @app_commands.command(name="info", description="Show everything known about one entry")
    @app_commands.describe(name="its name")
    async def info(self, interaction: discord.Interaction[DreamcordBot], name: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        entry = await self.library.info(name)
        await interaction.edit_original_response(
            embed=entry_embed(self.kind, entry, f"{self.kind.what} {entry.name}")
        )

    @app_commands.command(name="rename", description="Give an entry a new name")
    @app_commands.describe(old="its current name", new="the new name (letters, digits, _ . -)")
    async def rename(
        self,
        interaction: discord.Interaction[DreamcordBot],
        old: str,
        new: app_commands.Range[str, 1, 64],
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        entry = await self.library.rename(old, new)
        await self._audit(interaction, "rename", old, {"to": entry.name})
        await self._say(interaction, f"Renamed {self.kind.what} `{old}` to `{entry.name}`.")

    @app_commands.command(name="enable", description="Let prompts use a disabled entry again")
    @app_commands.describe(name="its name")
    async def enable(self, interaction: discord.Interaction[DreamcordBot], name: str) -> None:
        await self._set_enabled(interaction, name, True)

    @app_commands.command(name="disable", description="Keep an entry but refuse prompts using it")
    @app_commands.describe(name="its name")
    async def disable(self, interaction: discord.Interaction[DreamcordBot], name: str) -> None:
        await self._set_enabled(interaction, name, False)

    @app_commands.command(name="remove", description="Remove an entry and delete its file")
    @app_commands.describe(name="its name")
    async def remove(self, interaction: discord.Interaction[DreamcordBot], name: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        entry = await self.library.info(name)
        view = ConfirmRemove(self, interaction, entry.name)
        await interaction.edit_original_response(
            content=(
                f"Remove {self.kind.what} `{entry.name}` ({size_text(entry.size_bytes)}) and "
                f"delete its file? Prompts using it will be refused. This cannot be undone.\n"
                f"-# These buttons work for {CONFIRM_TIMEOUT_S:.0f} seconds."
            ),
            view=view,
        )

    @app_commands.command(name="scan", description="Add every .safetensors in the drop folder")
    async def scan(self, interaction: discord.Interaction[DreamcordBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcomes = await self.library.scan()
        folder = self.library.drop_folder
        embed = discord.Embed(
            title=f"{self.kind.what} drop folder scanned", colour=discord.Colour.blurple()
        )
        if not outcomes:
            embed.description = f"No .safetensors files in `{folder}`."
        else:
            marks = {True: "⛔", False: "✅"}
            lines = [
                f"{marks[o.refused] if o.added or o.refused else '♻️'} `{o.file}`: {o.message}"
                for o in outcomes
            ]
            more = len(lines) - MAX_SCAN_LINES
            text = "\n".join(line[:300] for line in lines[:MAX_SCAN_LINES])
            embed.description = (text + (f"\n… and {more} more" if more > 0 else ""))[:4096]
            added = [o.added for o in outcomes if o.added]
            refused = [o.file for o in outcomes if o.refused]
            await self._audit(interaction, "scan", None, {"added": added, "refused": refused})
        embed.set_footer(text=f"Drop folder: {folder}"[:2048])
        await interaction.edit_original_response(embed=embed)

    @app_commands.command(name="history", description="Recent changes to the library here")
    async def history(self, interaction: discord.Interaction[DreamcordBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        if interaction.guild_id is None:
            raise UserError("the history is kept per server: use this command in a server")
        prefix = f"{self.kind.command}."
        audit = self.bot.service.repos.audit
        found: list[Any] = []
        before = None
        for _ in range(HISTORY_PAGES):
            page = await audit.list_for_guild(interaction.guild_id, before=before)
            found += [entry for entry in page if entry.action.startswith(prefix)]
            if len(found) >= HISTORY_SHOWN or not page:
                break
            before = page[-1].id
        embed = discord.Embed(
            title=f"{self.kind.what} library: recent changes", colour=discord.Colour.blurple()
        )
        lines = [_history_line(entry) for entry in found[:HISTORY_SHOWN]]
        embed.description = "\n".join(lines)[:4096] if lines else "No changes recorded yet."
        await interaction.edit_original_response(embed=embed)

    # --- autocomplete: every name for admins, enabled ones for anyone else ---

    @info.autocomplete("name")
    @enable.autocomplete("name")
    @disable.autocomplete("name")
    @remove.autocomplete("name")
    @rename.autocomplete("old")
    async def _names(
        self, interaction: discord.Interaction[DreamcordBot], typed: str
    ) -> list[app_commands.Choice[str]]:
        admin = is_admin(interaction, self.bot.settings)
        names = await self.library.registry.names(enabled_only=not admin)
        return filter_names(names, typed)

    # --- the work behind `add` ---

    async def add_from(
        self,
        interaction: discord.Interaction[DreamcordBot],
        file: discord.Attachment | None,
        url: str | None,
        add: Callable[[Path, str, Source], Awaitable[Any]],
    ) -> Any | None:
        """Fetch the file, `add` it; answer with the entry's embed, or why it was refused.

        Returns the new entry, or None when it was refused (the answer says why).
        """
        what = self.kind.what
        label = (file.filename if file else url) or "?"
        try:
            if (file is None) == (url is None):
                raise UserError("give either a file or a url (one of them, not both)")
            if file is not None:
                path, filename, source = (
                    await self._fetch_attachment(file),
                    file.filename,
                    Source.ATTACHMENT,
                )
            else:
                assert url is not None
                downloaded = await self._fetch_url(interaction, url.strip())
                path, filename, source = downloaded.path, downloaded.filename, Source.URL
            label = safe_filename(filename)
            try:
                entry = await add(path, filename, source)
            finally:
                await asyncio.to_thread(path.unlink, missing_ok=True)
        except UserError as error:
            await interaction.edit_original_response(
                content=None, embed=refusal_embed(what, label[:100], str(error))
            )
            return None
        await self._audit(
            interaction,
            "add",
            entry.name,
            {"sha256": entry.sha256, "source": str(source), "size": entry.size_bytes},
        )
        embed = entry_embed(self.kind, entry, f"Added {what} {entry.name}")
        await interaction.edit_original_response(content=None, embed=embed)
        return entry

    async def _fetch_attachment(self, file: discord.Attachment) -> Path:
        """Check the size and suffix, then download at once: attachment URLs expire."""
        cap = self.kind.max_download_bytes
        if not file.filename.lower().endswith(SUFFIX):
            raise UserError(
                f"{safe_filename(file.filename)} is not a .safetensors file: only .safetensors "
                "is accepted (.ckpt/.pt/.bin files are pickles that can run code)"
            )
        if file.size > cap:
            raise UserError(
                f"the file is {size_text(file.size)}, more than the {size_text(cap)} allowed "
                f"for a {self.kind.what}: check that it is not a checkpoint"
            )
        try:
            data = await file.read()
        except discord.HTTPException as error:
            raise UserError(
                f"could not fetch the attachment ({error.status}): attach it again"
            ) from None
        return await asyncio.to_thread(self._write_temp, data)

    def _write_temp(self, data: bytes) -> Path:
        folder = self.library.store.folder
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return Path(name)

    async def _fetch_url(self, interaction: discord.Interaction[DreamcordBot], url: str) -> Any:
        """Stream the link with a byte cap; the deferred reply shows the bytes so far."""
        progress = _Progress()
        shower = asyncio.create_task(self._show_progress(interaction, progress))
        try:
            return await download(
                url,
                self.library.store.folder,
                max_bytes=self.kind.max_download_bytes,
                allowed_hosts=self.downloads.allowed_hosts,
                on_progress=progress.update,
                require_https=self.downloads.require_https,
            )
        finally:
            shower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shower

    async def _show_progress(
        self, interaction: discord.Interaction[DreamcordBot], progress: _Progress
    ) -> None:
        """Edit the reply with the latest count, at most once per PROGRESS_INTERVAL_S."""
        while True:
            await progress.changed.wait()
            progress.changed.clear()
            if progress.done != progress.shown:
                progress.shown = progress.done
                total = f" of {size_text(progress.total)}" if progress.total else ""
                with contextlib.suppress(discord.HTTPException):
                    await interaction.edit_original_response(
                        content=f"⬇️ Downloading: {size_text(progress.done)}{total}…"
                    )
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    async def _set_enabled(
        self, interaction: discord.Interaction[DreamcordBot], name: str, enabled: bool
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        entry = await self.library.set_enabled(name, enabled)
        verb = "enable" if enabled else "disable"
        await self._audit(interaction, verb, entry.name, {})
        effect = "prompts can use it" if enabled else "prompts that use it are refused"
        await self._say(
            interaction, f"{verb.capitalize()}d {self.kind.what} `{entry.name}`: {effect}."
        )

    async def confirm_remove(
        self, interaction: discord.Interaction[DreamcordBot], name: str
    ) -> str:
        """Remove after the admin confirmed; the message to show."""
        entry = await self.library.remove(name)
        await self._audit(interaction, "remove", entry.name, {"sha256": entry.sha256})
        return f"Removed {self.kind.what} `{entry.name}` and deleted its file."

    async def _audit(
        self,
        interaction: discord.Interaction[DreamcordBot],
        verb: str,
        target: str | None,
        detail: dict[str, Any],
    ) -> None:
        await self.bot.service.repos.audit.record(
            f"{self.kind.command}.{verb}",
            guild_id=interaction.guild_id,
            user_id=interaction.user.id,
            target=target,
            detail=detail,
        )

    @staticmethod
    async def _say(interaction: discord.Interaction[DreamcordBot], text: str) -> None:
        await interaction.edit_original_response(
            content=text, allowed_mentions=discord.AllowedMentions.none()
        )

    def spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class LoraCommands(LibraryCommands, group_name="lora", group_description="Manage LoRAs (admins)"):
    """`/lora ...`: the shared verbs, and `add` with a default weight, triggers and a preview."""

    kind = LORAS

    def __init__(self, bot: DreamcordBot) -> None:
        super().__init__(bot)
        self.previews = LoraPreviews(bot.service, bot.settings)

    @property
    def library(self) -> Library[Any]:
        return self.bot.services.loras

    @app_commands.command(name="add", description="Add a LoRA from an attachment or a link")
    @app_commands.describe(
        file="a .safetensors LoRA (up to Discord's upload limit)",
        url="an https link on Civitai or Hugging Face, for larger files",
        name="the name prompts use (default: from the file)",
        weight="default weight when a prompt gives none (1)",
        triggers="comma-separated trigger words (default: from the file's metadata)",
        preview="post a preview at weights 0, 0.5 and 1 in this channel (default: yes)",
    )
    async def add(
        self,
        interaction: discord.Interaction[DreamcordBot],
        file: discord.Attachment | None = None,
        url: app_commands.Range[str, 1, 2000] | None = None,
        name: app_commands.Range[str, 1, 64] | None = None,
        weight: app_commands.Range[float, -3.0, 3.0] | None = None,
        triggers: app_commands.Range[str, 0, 2000] | None = None,
        preview: bool = True,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        words = None if triggers is None else tuple(triggers.split(","))

        async def add(path: Path, filename: str, source: Source) -> Any:
            return await self.library.add(
                path,
                name=name,
                filename=filename,
                weight=weight,
                triggers=words,
                added_by=interaction.user.id,
                source=source,
                move=True,
            )

        entry = await self.add_from(interaction, file, url, add)
        if entry is not None and preview:
            await self._queue_preview(interaction, entry)

    async def _queue_preview(
        self, interaction: discord.Interaction[DreamcordBot], entry: Any
    ) -> None:
        """Queue the three preview jobs; post their grid in the channel once all are done."""
        assert self.bot.user is not None
        origin = Origin(
            user_id=self.bot.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
        )
        try:
            job_ids = await self.previews.queue(entry.name, entry.triggers, origin)
        except UserError as error:
            await interaction.followup.send(f"⚠️ {error}", ephemeral=True)
            return
        weights = ", ".join(f"{weight:g}" for weight in PREVIEW_WEIGHTS)
        await interaction.followup.send(
            f"A preview of `{entry.name}` at weights {weights} will be posted here when ready.",
            ephemeral=True,
        )
        if interaction.channel_id is not None:
            self.spawn(self._post_preview(entry, job_ids, interaction.channel_id))

    async def _post_preview(self, entry: Any, job_ids: list[str], channel_id: int) -> None:
        try:
            preview = await self.previews.collect(entry.name, entry.triggers, job_ids)
            png = await asyncio.to_thread(preview_grid, preview)
            channel = self.bot.get_partial_messageable(channel_id)
            failures = "".join(
                f"\n⚠️ weight {item.weight:g} failed: {item.error}"[:300]
                for item in preview.images
                if item.path is None
            )
            await channel.send(
                f"Preview of LoRA `{entry.name}` at weights "
                f"{', '.join(f'{item.weight:g}' for item in preview.images)} · seed "
                f"{preview.seed} · prompt: {discord.utils.escape_markdown(preview.prompt)}"
                + failures,
                file=discord.File(io.BytesIO(png), f"preview-{entry.name}.png"),
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not post the preview of LoRA %s", entry.name)


class FileOnlyCommands(LibraryCommands):
    """The shared verbs and an `add` that takes only the file and a name."""

    @app_commands.command(name="add", description="Add a .safetensors file to the library")
    @app_commands.describe(
        file="a .safetensors file",
        url="an https link on Civitai or Hugging Face",
        name="the name prompts use (default: from the file name)",
    )
    async def add(
        self,
        interaction: discord.Interaction[DreamcordBot],
        file: discord.Attachment | None = None,
        url: app_commands.Range[str, 1, 2000] | None = None,
        name: app_commands.Range[str, 1, 64] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)

        async def add(path: Path, filename: str, source: Source) -> Any:
            return await self.library.add(
                path,
                name=name,
                filename=filename,
                added_by=interaction.user.id,
                source=source,
                move=True,
            )

        await self.add_from(interaction, file, url, add)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class EmbeddingCommands(
    FileOnlyCommands, group_name="embedding", group_description="Manage embeddings (admins)"
):
    """`/embedding ...`: the shared verbs; the name is the word prompts write."""

    kind = EMBEDDINGS

    @property
    def library(self) -> Library[Any]:
        return self.bot.services.embeddings


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class HypernetworkCommands(
    FileOnlyCommands, group_name="hypernetwork", group_description="Manage hypernetworks (admins)"
):
    """`/hypernetwork ...`: the shared verbs; files are `dreamcord convert`ed A1111 `.pt`s."""

    kind = HYPERNETWORKS

    @property
    def library(self) -> Library[Any]:
        return self.bot.services.hypernetworks


class ListView(discord.ui.View):
    """Previous/Next over an ephemeral list; short-lived, as the ephemeral message is."""

    def __init__(
        self,
        kind: LibraryCommand,
        entries: Sequence[Any],
        owner_id: int,
        search: str | None,
        hidden: int,
    ) -> None:
        super().__init__(timeout=LIST_TIMEOUT_S)
        self.kind, self.entries, self.owner_id = kind, entries, owner_id
        self.search, self.hidden = search, hidden
        self.page = 0
        self.pages = max(1, -(-len(entries) // LIST_PAGE_SIZE))
        self._sync_buttons()

    def page_embed(self) -> discord.Embed:
        what = self.kind.what
        title = f"{what}s" + (f" matching “{self.search}”" if self.search else "")
        start = self.page * LIST_PAGE_SIZE
        lines = [
            entry_line(self.kind, entry) for entry in self.entries[start : start + LIST_PAGE_SIZE]
        ]
        embed = discord.Embed(title=title[:256], colour=discord.Colour.blurple())
        embed.description = "\n".join(lines)[:4096] if lines else f"No {what}s found."
        footer = f"{len(self.entries)} shown"
        if self.hidden:
            footer += f" · {self.hidden} disabled hidden (show_disabled: True)"
        if self.pages > 1:
            footer += f" · page {self.page + 1} of {self.pages} · buttons work for 10 minutes"
        embed.set_footer(text=footer)
        return embed

    def _sync_buttons(self) -> None:
        self.previous.disabled = self.page == 0
        self.next.disabled = self.page >= self.pages - 1

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
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

    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await answer_error(interaction, error)


class ConfirmRemove(discord.ui.View):
    """Remove / Keep under a removal question; only the asking admin can answer, within 60 s."""

    def __init__(
        self,
        cog: LibraryCommands,
        asked: discord.Interaction[DreamcordBot],
        name: str,
    ) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT_S)
        self.cog, self.asked, self.name = cog, asked, name

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        if interaction.user.id != self.asked.user.id or not is_admin(
            interaction, self.cog.bot.settings
        ):
            raise Refused("only the admin who asked can confirm this removal")
        return True

    @discord.ui.button(label="Remove", style=discord.ButtonStyle.danger)
    async def confirm(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        self.stop()
        await interaction.response.defer()
        text = await self.cog.confirm_remove(interaction, self.name)  # type: ignore[arg-type]
        await interaction.edit_original_response(content=text, view=None)

    @discord.ui.button(label="Keep", style=discord.ButtonStyle.secondary)
    async def keep(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        self.stop()
        await interaction.response.edit_message(
            content=f"Kept {self.cog.kind.what} `{self.name}`.", view=None
        )

    async def on_timeout(self) -> None:
        with contextlib.suppress(discord.HTTPException):
            await self.asked.edit_original_response(
                content=f"Not removed: no answer within {CONFIRM_TIMEOUT_S:.0f} seconds.",
                view=None,
            )

    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await answer_error(interaction, error)


def _history_line(entry: Any) -> str:
    detail = ", ".join(
        f"{key} {value}" for key, value in entry.detail.items() if value and key != "sha256"
    )
    target = f" `{entry.target}`" if entry.target else ""
    who = f"<@{entry.user_id}>" if entry.user_id else "someone"
    return f"`{entry.created_at[:16]}` {who} **{entry.action}**{target}" + (
        f" ({detail[:150]})" if detail else ""
    )
