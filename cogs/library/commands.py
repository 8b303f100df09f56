"""`/lora`, `/embedding`, `/hypernetwork` and `/controlnet ...`: admins manage the libraries
from Discord.

The verbs are the CLI's, on the same audited libraries (`App.libraries`): add (an attachment or
an https link from an allowed host), list, info, rename, enable, disable, remove (after a
confirmation), scan (the drop folder) and history (this server's audit log); a ControlNet also
has a type (`/controlnet type`). Every verb is for
admins, checked in code. After a LoRA is added, a preview at weights 0, 0.5 and 1 is queued at
low priority and posted in the channel when done.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import (
    PREVIEW_WEIGHTS,
    AuditedLibrary,
    NotAdded,
    Origin,
    preview_grid,
    screened,
    size_text,
)
from cogs.checks import actor_of, here_is_nsfw, is_library_admin, place_of
from cogs.client import DreamcordClient
from cogs.errors import Refused, answer
from cogs.fitting import MESSAGE, fit, fit_escaped
from cogs.library.embeds import entry_embed, history_embed, refusal_embed, scan_embed
from cogs.library.training import TrainingPresenter, answer_with_plan, ask_of, trainee_of
from cogs.library.views import ConfirmRemove, ListView, removal_question
from cogs.options import filter_names
from pipeline.control.model_types import CONTROL_TYPES, ControlType
from pipeline.errors import UserError
from pipeline.prompt.limits import MAX_LORA_WEIGHT, MIN_LORA_WEIGHT

log = logging.getLogger(__name__)

Interaction = discord.Interaction[DreamcordClient]

PROGRESS_INTERVAL_S = 2.5
"""Discord allows about one edit per 2-3 s per message; the latest byte count wins."""


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


class LibraryCommands(commands.GroupCog):
    """What the library groups share; a subclass names its library and adds `add`."""

    command: ClassVar[str]
    """Which of `App.libraries` this group manages: "lora", "embedding", "hypernetwork" or
    "controlnet"."""
    open_to_servers: ClassVar[frozenset[str]] = frozenset()
    """Verbs a server's own admins (and the roles they allow) may use, not only the owners."""

    def __init__(self, bot: DreamcordClient) -> None:
        self.bot = bot
        self._tasks: set[asyncio.Task[None]] = set()
        super().__init__()

    @property
    def library(self) -> AuditedLibrary:
        return self.bot.app.libraries.of(self.command)

    async def cog_unload(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def interaction_check(self, interaction: Interaction) -> bool:  # type: ignore[override]
        """`default_permissions` is only a default server admins can change: check in code."""
        if interaction.command is not None and interaction.command.name in self.open_to_servers:
            return True  # its service checks who may use it on this server
        if not is_library_admin(interaction):
            raise Refused(
                f"the {self.library.kind.what} library is shared by every server this bot is "
                "in, so only the bot's owners manage it (OWNER_IDS, or the admin role of its "
                "home server)"
            )
        return True

    # --- verbs shared by every library ---

    @app_commands.command(name="list", description="List the library, with enabled/disabled")
    @app_commands.describe(
        search="only names containing this text", show_disabled="include disabled entries"
    )
    async def list_entries(
        self,
        interaction: Interaction,
        search: app_commands.Range[str, 0, 64] | None = None,
        show_disabled: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        entries = await self.library.list(search or None)
        hidden = 0 if show_disabled else sum(1 for entry in entries if not entry.enabled)
        shown = [entry for entry in entries if show_disabled or entry.enabled]
        view = ListView(self.library, shown, interaction.user.id, search, hidden)
        buttons: dict[str, Any] = {"view": view} if view.pages > 1 else {}
        await interaction.edit_original_response(embed=view.page_embed(), **buttons)

    @app_commands.command(name="info", description="Show everything known about one entry")
    @app_commands.describe(name="its name")
    async def info(self, interaction: Interaction, name: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        entry = await self.library.info(name)
        kind = self.library.kind
        await interaction.edit_original_response(
            embed=entry_embed(kind, entry, f"{kind.what} {entry.name}")
        )

    @app_commands.command(name="rename", description="Give an entry a new name")
    @app_commands.describe(old="its current name", new="the new name (letters, digits, _ . -)")
    async def rename(
        self, interaction: Interaction, old: str, new: app_commands.Range[str, 1, 64]
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        entry = await self.library.rename(old, new, actor_of(interaction))
        what = self.library.kind.what
        await self._say(interaction, f"Renamed {what} `{old}` to `{entry.name}`.")

    @app_commands.command(name="enable", description="Let prompts use a disabled entry again")
    @app_commands.describe(name="its name")
    async def enable(self, interaction: Interaction, name: str) -> None:
        await self._set_enabled(interaction, name, True)

    @app_commands.command(name="disable", description="Keep an entry but refuse prompts using it")
    @app_commands.describe(name="its name")
    async def disable(self, interaction: Interaction, name: str) -> None:
        await self._set_enabled(interaction, name, False)

    @app_commands.command(name="remove", description="Remove an entry and delete its file")
    @app_commands.describe(name="its name")
    async def remove(self, interaction: Interaction, name: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        entry = await self.library.info(name)
        await interaction.edit_original_response(
            content=removal_question(self.library, entry),
            view=ConfirmRemove(self.library, interaction, entry.name),
        )

    @app_commands.command(name="scan", description="Add every .safetensors in the drop folder")
    async def scan(self, interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcomes = await self.library.scan(actor_of(interaction))
        embed = scan_embed(self.library.kind.what, self.library.drop_folder, outcomes)
        await interaction.edit_original_response(embed=embed)

    @app_commands.command(name="history", description="Recent changes to the library here")
    async def history(self, interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        if interaction.guild_id is None:
            raise UserError("the history is kept per server: use this command in a server")
        entries = await self.library.history(interaction.guild_id)
        await interaction.edit_original_response(
            embed=history_embed(self.library.kind.what, entries)
        )

    # --- autocomplete: every name for admins, enabled ones for anyone else ---

    @info.autocomplete("name")
    @enable.autocomplete("name")
    @disable.autocomplete("name")
    @remove.autocomplete("name")
    @rename.autocomplete("old")
    async def _names(self, interaction: Interaction, typed: str) -> list[app_commands.Choice[str]]:
        names = await self.library.names(enabled_only=not is_library_admin(interaction))
        return filter_names(names, typed)

    # --- the work behind `add` ---

    async def add_from(
        self,
        interaction: Interaction,
        file: discord.Attachment | None,
        url: str | None,
        **options: Any,
    ) -> Any | None:
        """Fetch the file and add it; answer with the entry's embed, or why it was refused.

        Returns the new entry, or None when it was refused (the answer says why).
        """
        library, actor = self.library, actor_of(interaction)
        what = library.kind.what
        label = (file.filename if file else url) or "?"
        try:
            if (file is None) == (url is None):
                raise UserError("give either a file or a url (one of them, not both)")
            if file is not None:
                library.check_upload(file.filename, file.size)
                data = await _attachment_bytes(file)
                entry = await library.add_bytes(data, file.filename, actor, **options)
            else:
                assert url is not None
                progress = _Progress()
                shower = asyncio.create_task(self._show_progress(interaction, progress))
                try:
                    entry = await library.add_url(url.strip(), actor, progress.update, **options)
                finally:
                    shower.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await shower
        except UserError as error:
            label = error.label if isinstance(error, NotAdded) else label
            await interaction.edit_original_response(
                content=None, embed=refusal_embed(what, fit(label, 100), str(error))
            )
            return None
        embed = entry_embed(library.kind, entry, f"Added {what} {entry.name}")
        await interaction.edit_original_response(content=None, embed=embed)
        return entry

    async def _show_progress(self, interaction: Interaction, progress: _Progress) -> None:
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

    async def _set_enabled(self, interaction: Interaction, name: str, enabled: bool) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        entry = await self.library.set_enabled(name, enabled, actor_of(interaction))
        verb = "enable" if enabled else "disable"
        effect = "prompts can use it" if enabled else "prompts that use it are refused"
        what = self.library.kind.what
        await self._say(interaction, f"{verb.capitalize()}d {what} `{entry.name}`: {effect}.")

    @staticmethod
    async def _say(interaction: Interaction, text: str) -> None:
        await interaction.edit_original_response(
            content=text, allowed_mentions=discord.AllowedMentions.none()
        )

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _attachment_bytes(file: discord.Attachment) -> bytes:
    """Download an attachment at once: attachment URLs expire."""
    try:
        return await file.read()
    except discord.HTTPException as error:
        raise UserError(
            f"could not fetch the attachment ({error.status}): attach it again"
        ) from None


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class LoraCommands(LibraryCommands, group_name="lora", group_description="Manage LoRAs (admins)"):
    """`/lora ...`: the shared verbs, `add` with a default weight, triggers and a preview, and
    `train` (cogs.library.training)."""

    command = "lora"
    open_to_servers = frozenset({"train"})

    async def cog_load(self) -> None:
        self.bot.app.training.listener = TrainingPresenter(
            self.bot, self._preview_trained, self.bot.presenter.edit_interval_s
        )

    @app_commands.command(name="train", description="Train a LoRA from a zip of pictures")
    @app_commands.describe(
        name="the new LoRA's name (letters, digits, _ . -)",
        images="a .zip of pictures, each with an optional .txt caption beside it",
        url="an https link to such a zip (Hugging Face, ...), for larger sets",
        trigger="the word that calls it up in prompts (default: the name)",
        preset="the guides' starting point (default: character)",
        steps="total steps (default: from the preset and the number of pictures)",
        rank="network dim (default: the preset's; alpha is rank / 2)",
        resolution="training side in pixels, a multiple of 64 (default 512)",
    )
    @app_commands.choices(
        preset=[
            app_commands.Choice(name="character: a person or figure", value="character"),
            app_commands.Choice(name="style: a look or medium", value="style"),
            app_commands.Choice(name="concept: an object, pose or scene", value="concept"),
        ]
    )
    async def train(
        self,
        interaction: Interaction,
        name: app_commands.Range[str, 1, 60],
        images: discord.Attachment | None = None,
        url: app_commands.Range[str, 1, 2000] | None = None,
        trigger: app_commands.Range[str, 1, 100] | None = None,
        preset: app_commands.Choice[str] | None = None,
        steps: app_commands.Range[int, 1, 50_000] | None = None,
        rank: app_commands.Range[int, 1, 256] | None = None,
        resolution: app_commands.Range[int, 256, 1024] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        training = self.bot.app.training
        trainee = trainee_of(interaction)
        ask = ask_of(name, trigger, preset.value if preset else None, steps, rank, resolution)
        if (images is None) == (url is None):
            raise UserError("give the pictures as one zip: images (an attachment) or url (a link)")
        if images is not None:
            await training.check_allowed(trainee)
            training.check_upload(images.filename, images.size)
            data = await _attachment_bytes(images)
            prepared = await training.prepare_bytes(data, images.filename, ask, trainee)
        else:
            assert url is not None
            prepared = await training.prepare_url(url.strip(), ask, trainee)
        await answer_with_plan(interaction, prepared, trainee)

    async def _preview_trained(self, entry: Any, origin: Origin) -> None:
        """A trained LoRA's preview, as after `/lora add`."""
        try:
            job_ids = await self.bot.app.previews.queue(entry.name, entry.triggers, origin)
        except UserError as error:
            log.warning("no preview of trained LoRA %s: %s", entry.name, error)
            return
        self.spawn(self._post_preview(entry, job_ids, origin))

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
        interaction: Interaction,
        file: discord.Attachment | None = None,
        url: app_commands.Range[str, 1, 2000] | None = None,
        name: app_commands.Range[str, 1, 64] | None = None,
        weight: app_commands.Range[float, MIN_LORA_WEIGHT, MAX_LORA_WEIGHT] | None = None,
        triggers: app_commands.Range[str, 0, 2000] | None = None,
        preview: bool = True,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        words = None if triggers is None else tuple(triggers.split(","))
        entry = await self.add_from(
            interaction, file, url, name=name, weight=weight, triggers=words
        )
        if entry is not None and preview:
            await self._queue_preview(interaction, entry)

    async def _queue_preview(self, interaction: Interaction, entry: Any) -> None:
        """Queue the three preview jobs; post their grid in the channel once all are done."""
        assert self.bot.user is not None
        origin = Origin(
            user_id=self.bot.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            channel_nsfw=here_is_nsfw(interaction),
        )
        try:
            job_ids = await self.bot.app.previews.queue(
                entry.name, entry.triggers, origin, place_of(interaction)
            )
        except UserError as error:
            await answer(interaction, f"⚠️ {error}")
            return
        weights = ", ".join(f"{weight:g}" for weight in PREVIEW_WEIGHTS)
        await interaction.followup.send(
            f"A preview of `{entry.name}` at weights {weights} will be posted here when ready.",
            ephemeral=True,
        )
        if interaction.channel_id is not None:
            self.spawn(self._post_preview(entry, job_ids, origin))

    async def _post_preview(self, entry: Any, job_ids: list[str], origin: Origin) -> None:
        """The three images in one grid, screened by the safety checker for the channel."""
        assert origin.channel_id is not None
        app = self.bot.app
        try:
            preview = await app.previews.collect(entry.name, entry.triggers, job_ids)
            screening = await app.safety.screen(
                preview.images, origin.guild_id, origin.channel_nsfw
            )
            preview = screened(preview, screening)
            png = await asyncio.to_thread(preview_grid, preview)
            channel = self.bot.get_partial_messageable(origin.channel_id)
            failures = "".join(
                f"\n⚠️ weight {item.weight:g} failed: {fit(item.error or '', 300)}"
                for item in preview.images
                if item.path is None and not item.withheld
            )
            note = f"\n-# {screening.note}" if screening.note else ""
            name = f"{'SPOILER_' if screening.spoiler else ''}preview-{entry.name}.png"
            weights = ", ".join(f"{item.weight:g}" for item in preview.images)
            head = f"Preview of LoRA `{entry.name}` at weights {weights} · seed {preview.seed} · "
            head += "prompt: "
            room = MESSAGE - len(head) - len(failures) - len(note)
            await channel.send(
                head + fit_escaped(preview.prompt, room) + failures + note,
                file=discord.File(io.BytesIO(png), name),
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
        interaction: Interaction,
        file: discord.Attachment | None = None,
        url: app_commands.Range[str, 1, 2000] | None = None,
        name: app_commands.Range[str, 1, 64] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.add_from(interaction, file, url, name=name)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class EmbeddingCommands(
    FileOnlyCommands, group_name="embedding", group_description="Manage embeddings (admins)"
):
    """`/embedding ...`: the shared verbs; the name is the word prompts write."""

    command = "embedding"


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class HypernetworkCommands(
    FileOnlyCommands, group_name="hypernetwork", group_description="Manage hypernetworks (admins)"
):
    """`/hypernetwork ...`: the shared verbs; files are `dreamcord convert`ed A1111 `.pt`s."""

    command = "hypernetwork"


_TYPE_CHOICES = [app_commands.Choice(name=kind, value=kind) for kind in CONTROL_TYPES]


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class ControlNetCommands(
    LibraryCommands, group_name="controlnet", group_description="Manage ControlNet models (admins)"
):
    """`/controlnet ...`: the shared verbs, `add` with the model's type, and `type` to set it."""

    command = "controlnet"

    @app_commands.command(name="add", description="Add an SD1.5 ControlNet (.safetensors)")
    @app_commands.describe(
        file="a .safetensors ControlNet (up to Discord's upload limit)",
        url="an https link on Civitai or Hugging Face, for larger files (up to 1.5 GiB)",
        name="the name /imagine's control option uses (default: from the file name)",
        control_type="what it follows (default: guessed from the file name)",
    )
    @app_commands.rename(control_type="type")
    @app_commands.choices(control_type=_TYPE_CHOICES)
    async def add(
        self,
        interaction: Interaction,
        file: discord.Attachment | None = None,
        url: app_commands.Range[str, 1, 2000] | None = None,
        name: app_commands.Range[str, 1, 64] | None = None,
        control_type: app_commands.Choice[str] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        chosen = None if control_type is None else ControlType(control_type.value)
        await self.add_from(interaction, file, url, name=name, control_type=chosen)

    @app_commands.command(name="type", description="Set what a ControlNet follows")
    @app_commands.describe(name="its name", control_type="canny, depth, openpose, ...")
    @app_commands.rename(control_type="type")
    @app_commands.choices(control_type=_TYPE_CHOICES)
    async def set_type(
        self, interaction: Interaction, name: str, control_type: app_commands.Choice[str]
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        actor = actor_of(interaction)
        entry = await self.library.set_control_type(name, control_type.value, actor)
        await self._say(
            interaction, f"ControlNet `{entry.name}` is now of type `{entry.control_type}`."
        )

    @set_type.autocomplete("name")
    async def _type_names(
        self, interaction: Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        names = await self.library.names(enabled_only=not is_library_admin(interaction))
        return filter_names(names, typed)
