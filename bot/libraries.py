"""The libraries as the front ends use them (`App.libraries`): every change audited.

`bot.library` keeps files and rows consistent; this layer adds what Discord and the CLI share
on top: taking a file from a path, from uploaded bytes or from a link (with the download rules),
and one audit entry per change, whoever made it (the CLI's entries have no guild or user).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.downloads import DEFAULT_DEADLINE_S, DEFAULT_HOSTS, download
from bot.guild import Actor
from bot.library import (
    ControlNetLibrary,
    EmbeddingLibrary,
    HypernetworkLibrary,
    Library,
    LoraLibrary,
    ScanOutcome,
    safe_filename,
)
from bot.library_kinds import (
    CONTROLNETS,
    EMBEDDINGS,
    HYPERNETWORKS,
    LORAS,
    MIB,
    LibraryKind,
)
from bot.settings import Settings
from data.audit import AuditEntry, AuditRepository
from data.files import SUFFIX
from data.registry import ControlNetEntry, Source
from pipeline.control.model_types import parse_control_type
from pipeline.errors import UserError

HISTORY_SHOWN = 15
HISTORY_PAGES = 8
"""Audit pages (25 entries each) read to find a library's latest changes."""

Progress = Callable[[int, int | None], None]


@dataclass
class DownloadRules:
    """Where `add` from a link may fetch from.

    Production keeps the defaults (https only; Civitai and Hugging Face). The end-to-end tests
    replace the rules of `App.libraries` so the fake server's local http CDN can be used.
    """

    allowed_hosts: tuple[str, ...] = DEFAULT_HOSTS
    require_https: bool = True
    deadline_s: float = DEFAULT_DEADLINE_S


def download_rules(settings: Settings) -> DownloadRules:
    """The rules DOWNLOAD_HOSTS and DOWNLOAD_TIMEOUT_S set."""
    return DownloadRules(
        allowed_hosts=tuple(settings.download_hosts),
        deadline_s=settings.download_timeout_s,
    )


class NotAdded(UserError):
    """A file was refused; `label` is its name as the user knows it (safe characters)."""

    def __init__(self, message: str, label: str) -> None:
        super().__init__(message)
        self.label = label


def size_text(size: int) -> str:
    return f"{size / MIB:.1f} MiB" if size >= MIB else f"{size / 1024:.0f} KiB"


class AuditedLibrary:
    """One library's verbs for people: add (path, bytes, link), rename, enable, remove, scan."""

    def __init__(
        self,
        kind: LibraryKind,
        library: Library[Any, Any],
        audit: AuditRepository,
        rules: Libraries,
    ) -> None:
        self.kind = kind
        self.library = library
        self._audit = audit
        self._rules = rules

    async def list(self, search: str | None = None) -> list[Any]:
        return await self.library.list(search)

    async def info(self, name: str) -> Any:
        return await self.library.info(name)

    async def names(self, enabled_only: bool = True) -> builtins.list[str]:
        return await self.library.registry.names(enabled_only=enabled_only)

    @property
    def drop_folder(self) -> Path:
        return self.library.drop_folder

    def check_upload(self, filename: str, size: int) -> None:
        """Refuse an upload by its name and size, before anything is downloaded."""
        if not filename.lower().endswith(SUFFIX):
            raise UserError(
                f"{safe_filename(filename)} is not a .safetensors file: only .safetensors "
                "is accepted (.ckpt/.pt/.bin files are pickles that can run code)"
            )
        cap = self.kind.max_download_bytes
        if size > cap:
            raise UserError(
                f"the file is {size_text(size)}, more than the {size_text(cap)} allowed "
                f"for a {self.kind.what}: check that it is not a checkpoint"
            )

    async def add_file(
        self,
        path: Path,
        actor: Actor,
        *,
        filename: str | None = None,
        source: Source = Source.CLI,
        move: bool = False,
        **options: Any,
    ) -> Any:
        """Check and keep the file at `path` (`options`: the library's own, such as weight).

        A refusal is a `NotAdded` naming the file.
        """
        try:
            entry = await self.library.add(
                path, filename=filename, added_by=actor.user_id, source=source, move=move, **options
            )
        except UserError as error:
            raise NotAdded(str(error), safe_filename(filename or path.name)) from None
        detail = {"sha256": entry.sha256, "source": str(source), "size": entry.size_bytes}
        await self._record(actor, "add", entry.name, detail)
        return entry

    async def add_bytes(self, data: bytes, filename: str, actor: Actor, **options: Any) -> Any:
        """An uploaded file (a Discord attachment), checked like one."""
        self.check_upload(filename, len(data))
        path = await asyncio.to_thread(self.library.store.write_temp, data)
        try:
            return await self.add_file(
                path, actor, filename=filename, source=Source.ATTACHMENT, move=True, **options
            )
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def add_url(
        self, url: str, actor: Actor, on_progress: Progress | None = None, **options: Any
    ) -> Any:
        """Stream a link within the download rules and the library's byte cap, then add it."""
        rules = self._rules.downloads
        downloaded = await download(
            url,
            self.library.store.folder,
            max_bytes=self.kind.max_download_bytes,
            allowed_hosts=rules.allowed_hosts,
            on_progress=on_progress,
            require_https=rules.require_https,
            deadline_s=rules.deadline_s,
        )
        try:
            return await self.add_file(
                downloaded.path,
                actor,
                filename=downloaded.filename,
                source=Source.URL,
                move=True,
                **options,
            )
        finally:
            await asyncio.to_thread(downloaded.path.unlink, missing_ok=True)

    async def rename(self, name: str, new_name: str, actor: Actor) -> Any:
        entry = await self.library.rename(name, new_name)
        await self._record(actor, "rename", name, {"to": entry.name})
        return entry

    async def set_enabled(self, name: str, enabled: bool, actor: Actor) -> Any:
        entry = await self.library.set_enabled(name, enabled)
        await self._record(actor, "enable" if enabled else "disable", entry.name, {})
        return entry

    async def remove(self, name: str, actor: Actor) -> Any:
        entry = await self.library.remove(name)
        await self._record(actor, "remove", entry.name, {"sha256": entry.sha256})
        return entry

    async def set_control_type(self, name: str, control_type: str, actor: Actor) -> ControlNetEntry:
        """Set a ControlNet's type (`canny`, `depth`, ...), when its name misled the guess."""
        library = self.library
        if not isinstance(library, ControlNetLibrary):
            raise UserError(f"a {self.kind.what} has no type; only ControlNets do")
        entry = await library.set_control_type(name, parse_control_type(control_type))
        await self._record(actor, "type", entry.name, {"type": str(entry.control_type)})
        return entry

    async def scan(self, actor: Actor, folder: Path | None = None) -> builtins.list[ScanOutcome]:
        """Add what the drop folder (or `folder`) holds; audited when there was anything."""
        outcomes = await self.library.scan(folder)
        if outcomes:
            added = [outcome.added for outcome in outcomes if outcome.added]
            refused = [outcome.file for outcome in outcomes if outcome.refused]
            await self._record(actor, "scan", None, {"added": added, "refused": refused})
        return outcomes

    async def history(self, guild_id: int) -> builtins.list[AuditEntry]:
        """This library's latest changes on a server, newest first."""
        prefix = f"{self.kind.command}."
        found: builtins.list[AuditEntry] = []
        before = None
        for _ in range(HISTORY_PAGES):
            page = await self._audit.list_for_guild(guild_id, before=before)
            found += [entry for entry in page if entry.action.startswith(prefix)]
            if len(found) >= HISTORY_SHOWN or not page:
                break
            before = page[-1].id
        return found[:HISTORY_SHOWN]

    async def _record(
        self, actor: Actor, verb: str, target: str | None, detail: dict[str, Any]
    ) -> None:
        await self._audit.record(
            f"{self.kind.command}.{verb}",
            guild_id=actor.guild_id,
            user_id=actor.user_id,
            target=target,
            detail=detail,
        )


class Libraries:
    """The four libraries, and the download rules they share."""

    def __init__(
        self,
        loras: LoraLibrary,
        embeddings: EmbeddingLibrary,
        hypernetworks: HypernetworkLibrary,
        controlnets: ControlNetLibrary,
        audit: AuditRepository,
        downloads: DownloadRules | None = None,
    ) -> None:
        self.downloads = downloads or DownloadRules()
        self.loras = AuditedLibrary(LORAS, loras, audit, self)
        self.embeddings = AuditedLibrary(EMBEDDINGS, embeddings, audit, self)
        self.hypernetworks = AuditedLibrary(HYPERNETWORKS, hypernetworks, audit, self)
        self.controlnets = AuditedLibrary(CONTROLNETS, controlnets, audit, self)
        """ControlNet models; `info(name).control_type` picks a unit's default preprocessor."""

    def of(self, command: str) -> AuditedLibrary:
        """The library a command names: "lora", "embedding", "hypernetwork" or "controlnet"."""
        return {
            LORAS.command: self.loras,
            EMBEDDINGS.command: self.embeddings,
            HYPERNETWORKS.command: self.hypernetworks,
            CONTROLNETS.command: self.controlnets,
        }[command]
