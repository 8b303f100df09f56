"""The model-file libraries (LoRAs, embeddings, hypernetworks, ControlNets): checked files,
names in SQLite.

A file is copied into the store (`data.files.FileStore`, hashed on the way), inspected there, and
only then renamed to `<folder>/<sha256>.safetensors` and registered. So no half-written or
unchecked file ever has a final name, and what was inspected is exactly what the engine loads.
Blocking file work runs in threads; the engine's worker thread reads a snapshot of the entries
(`names`, `resolve`) that is refreshed after every change here, never the database. Names never
become paths: a stored file is found by its sha256 alone.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

from data.files import SUFFIX, FileStore, Staged
from data.registry import (
    ControlLayout,
    ControlNetEntry,
    ControlNetRepository,
    EmbeddingEntry,
    EmbeddingRepository,
    HypernetworkEntry,
    HypernetworkRepository,
    LoraEntry,
    LoraKind,
    LoraRepository,
    ModelBase,
    Registry,
    Source,
    name_key,
)
from pipeline.control.model_types import ControlType, guess_control_type
from pipeline.errors import UserError
from pipeline.prompt.limits import PromptLimits

if TYPE_CHECKING:
    from pipeline.control.inspection import ControlInspection
    from pipeline.lora.inspection import Inspection

DROP_FOLDER = "incoming"
MAX_NAME_CHARS = 60
"""Registry names allow 64; the rest leaves room for a `-2` suffix on a clash."""
MAX_TRIGGERS = 20
MAX_TRIGGER_CHARS = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_WEIGHTS = PromptLimits()


class Inspected(Protocol):
    """What `Library` reads of any inspection: the file's free-text metadata."""

    @property
    def metadata(self) -> dict[str, str]: ...


Entry = TypeVar("Entry", LoraEntry, EmbeddingEntry, HypernetworkEntry, ControlNetEntry)
Found = TypeVar("Found", bound=Inspected)
Register = Callable[[str, "Staged", Found], Awaitable[Entry]]
"""Writes the registry row of a checked, placed file: (name, staged copy, inspection).
Subscripted `Register[Found, Entry]`, in the order the type variables appear."""


def text_width(model: str) -> int:
    """The text width files must match: the tiny model's for MODEL=tiny, else SD1.5's."""
    from pipeline.lora.bases import SD1_WIDTH

    if model == "tiny":
        from pipeline.tiny import TINY_WIDTH

        return TINY_WIDTH
    return SD1_WIDTH


def attention_widths(model: str) -> tuple[int, ...]:
    """The input widths of the model's attention keys/values, which hypernetworks must match."""
    if model == "tiny":
        from pipeline.tiny import TINY_WIDTH, UNET_CONFIG

        return tuple(sorted({TINY_WIDTH, *UNET_CONFIG["block_out_channels"]}))
    from pipeline.lora.hypernet_layout import SD1_ATTENTION_WIDTHS

    return SD1_ATTENTION_WIDTHS


def safe_filename(text: str) -> str:
    """A file's base name in safe characters, for a temporary copy and messages."""
    base = text.replace("\\", "/").rsplit("/", 1)[-1]
    return _UNSAFE.sub("_", base).strip("._") or "unnamed.safetensors"


def safe_name(text: str) -> str:
    """A registry name made from free text (a file name, `ss_output_name`)."""
    name = _UNSAFE.sub("_", text).strip("_.-")[:MAX_NAME_CHARS].rstrip("_.-")
    return name or "unnamed"


@dataclass(frozen=True)
class ScanOutcome:
    """What happened to one file of the drop folder: `added` is the new entry's name, or None;
    a `refused` file was left in place."""

    file: str
    added: str | None
    message: str
    refused: bool = False


class AlreadyRegistered(UserError):
    """The same file (same sha256) is already in the library, under `name`."""

    def __init__(self, what: str, name: str) -> None:
        super().__init__(f"this file is already in the {what} library as {name!r}")
        self.name = name


class Library(ABC, Generic[Entry, Found]):
    """One kind of file (`Entry` rows, checked into a `Found` inspection): add, scan, list,
    rename, enable, remove, resolve.

    Changes are serialised by a lock, so two adds of one file cannot race between the file
    and the row. Call `refresh` once after construction to load the snapshot.
    """

    folder: ClassVar[str]
    what: ClassVar[str]
    registry: Registry[Entry]

    def __init__(self, data_dir: Path, model_width: int) -> None:
        self.store = FileStore(data_dir / self.folder)
        self.drop_folder = self.store.folder / DROP_FOLDER
        self.model_width = model_width
        self._lock = asyncio.Lock()
        self._snapshot: dict[str, Entry] = {}

    # --- for the engine's worker thread: snapshot reads only ---

    def names(self) -> list[str]:
        """Enabled names, as spelled for display (prompt parsing, autocomplete)."""
        return [entry.name for entry in self._snapshot.values() if entry.enabled]

    def resolve(self, name: str) -> tuple[Path, str]:
        """(path, sha256) of an enabled entry; UserError for an unknown or disabled name."""
        entry = self._snapshot.get(name.lower())
        if entry is None:
            raise UserError(f"there is no {self.what} named {name!r}: the list command shows them")
        if not entry.enabled:
            raise UserError(f"the {self.what} {entry.name!r} is disabled: an admin can enable it")
        return self.store.path_of(entry.sha256), entry.sha256

    # --- for the event loop ---

    async def refresh(self) -> None:
        """Reload the snapshot from the database (after changes made by another process)."""
        entries = await self.registry.list()
        self._snapshot = {entry.name.lower(): entry for entry in entries}

    async def info(self, name: str) -> Entry:
        entry = await self.registry.get(name)
        if entry is None:
            raise UserError(f"there is no {self.what} named {name!r}: the list command shows them")
        return entry

    async def rename(self, name: str, new_name: str) -> Entry:
        await asyncio.to_thread(self._check_name, new_name)
        async with self._lock:
            entry = await self.registry.rename(name, new_name)
            await self.refresh()
        return entry

    async def set_enabled(self, name: str, enabled: bool) -> Entry:
        async with self._lock:
            entry = await self.registry.set_enabled(name, enabled)
            await self.refresh()
        return entry

    async def remove(self, name: str) -> Entry:
        """Unregister, then delete the file; sha256 is unique per library, so no one else uses it.

        A batch already running keeps its parsed copy; later ones get "no such name".
        """
        async with self._lock:
            entry = await self.registry.remove(name)
            await self.refresh()
            await asyncio.to_thread(self.store.delete, entry.sha256)
        return entry

    @abstractmethod
    async def add(
        self,
        source_path: Path,
        *,
        name: str | None = None,
        filename: str | None = None,
        added_by: int | None = None,
        source: Source = Source.CLI,
        move: bool = False,
    ) -> Entry:
        """Check `source_path` and keep it in the library.

        `filename` is the name the file came with (a download's, an attachment's) when that is
        not `source_path`'s; with no `name` the entry is named after its `ss_output_name`
        metadata or that file name. `move` deletes `source_path` once it is stored.
        """

    async def _add(
        self,
        source_path: Path,
        name: str | None,
        filename: str | None,
        move: bool,
        register: Register[Found, Entry],
    ) -> Entry:
        """Stage, inspect, name, place and `register` one file, as `add` describes."""
        if not await asyncio.to_thread(source_path.is_file):
            raise UserError(f"{source_path} does not exist or is not a file")
        label = safe_filename(filename or source_path.name)
        if not label.lower().endswith(SUFFIX):
            raise UserError(
                f"{label} is not a .safetensors file: only .safetensors is accepted "
                "(.ckpt/.pt/.bin files are pickles that can run code)"
            )
        if name is not None:
            await self._check_free(name)  # before copying anything
        async with self._lock:
            try:
                staged = await asyncio.to_thread(self.store.stage, source_path, label)
            except OSError as error:  # a full disk is DiskFull, a UserError of its own
                raise UserError(
                    f"{label} cannot be read ({error.strerror}): check the file and its rights"
                ) from None
            try:
                entry = await self._admit(staged, label, name, register)
            finally:
                await asyncio.to_thread(self.store.discard, staged)
            await self.refresh()
        if move:
            await asyncio.to_thread(source_path.unlink, missing_ok=True)
        return entry

    async def _admit(
        self, staged: Staged, label: str, name: str | None, register: Register[Found, Entry]
    ) -> Entry:
        inspection = await asyncio.to_thread(self._inspect, staged.temp)
        if reason := self._refusal(inspection):
            raise UserError(f"{label} cannot be added: {reason}")
        for entry in await self.registry.list():
            if entry.sha256 == staged.sha256:
                raise AlreadyRegistered(self.what, entry.name)
        name = name or safe_name(inspection.metadata.get("ss_output_name") or Path(label).stem)
        await self._check_free(name)
        placed = await asyncio.to_thread(self.store.place, staged)
        try:
            return await register(name, staged, inspection)
        except BaseException:
            if placed:
                await asyncio.to_thread(self.store.delete, staged.sha256)
            raise

    async def scan(self, folder: Path | None = None) -> list[ScanOutcome]:
        """Add every `.safetensors` of the drop folder, moving accepted files into the store.

        Refused files stay where they are, with the reason in their outcome; a file already in
        the library is a duplicate and is deleted from the drop folder.
        """
        folder = folder or self.drop_folder
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(self.store.remove_stale_temps)
        files = await asyncio.to_thread(_drop_files, folder)
        outcomes = []
        for path in files:
            try:
                entry = await self.add(path, source=Source.FOLDER, move=True)
                outcomes.append(ScanOutcome(path.name, entry.name, f"added as {entry.name!r}"))
            except AlreadyRegistered as duplicate:
                await asyncio.to_thread(path.unlink, missing_ok=True)
                message = f"already in the library as {duplicate.name!r}: removed the copy"
                outcomes.append(ScanOutcome(path.name, None, message))
            except UserError as error:
                outcomes.append(ScanOutcome(path.name, None, f"left in place: {error}", True))
            except Exception as error:  # a bug: one file must not keep the bot from starting
                detail = " ".join(str(error).split())[:200]  # one log line, whatever it says
                reason = (
                    f"left in place: it could not be checked ({type(error).__name__}: {detail})"
                )
                outcomes.append(ScanOutcome(path.name, None, reason, True))
        return outcomes

    async def _check_free(self, name: str) -> None:
        """A UserError if `name` is not allowed or taken; a taken one comes with a free one."""
        await asyncio.to_thread(self._check_name, name)
        taken = await self.registry.get(name)
        if taken is None:
            return
        number = 2
        while await self.registry.get(candidate := f"{name[:MAX_NAME_CHARS]}-{number}"):
            number += 1
        raise UserError(
            f"the name {taken.name!r} is taken by another {self.what}: choose another, "
            f"for example {candidate!r}"
        )

    def _check_name(self, name: str) -> None:
        """Refuse a name the registry or prompts cannot use (blocking for embeddings)."""
        name_key(name, self.what)

    @abstractmethod
    def _inspect(self, path: Path) -> Found:
        """What the staged file at `path` is (blocking: runs in a thread)."""

    @abstractmethod
    def _refusal(self, inspection: Found) -> str | None:
        """Why an inspected file does not belong in this library, or None."""

    async def list(self, search: str | None = None) -> list[Entry]:
        """Entries by name, all of them or those whose name contains `search`.

        Last in the class, so its name does not shadow the builtin in annotations above.
        """
        return await self.registry.list(search=search)


class AdapterLibrary(Library[Entry, "Inspection"]):
    """The libraries of files that change the model's weights or words, inspected alike."""

    def _inspect(self, path: Path) -> Inspection:
        from pipeline.lora.inspection import inspect_file

        return inspect_file(path, self.model_width)


class LoraLibrary(AdapterLibrary[LoraEntry]):
    folder = "loras"
    what = "LoRA"
    registry: LoraRepository

    def __init__(self, registry: LoraRepository, data_dir: Path, model_width: int) -> None:
        super().__init__(data_dir, model_width)
        self.registry = registry

    def triggers(self, name: str) -> tuple[str, ...]:
        """A LoRA's trigger words (none for an unknown name), read without I/O for policy."""
        entry = self._snapshot.get(name.lower())
        return entry.triggers if entry is not None else ()

    async def add(
        self,
        source_path: Path,
        *,
        name: str | None = None,
        filename: str | None = None,
        weight: float | None = None,
        triggers: tuple[str, ...] | None = None,
        added_by: int | None = None,
        source: Source = Source.CLI,
        move: bool = False,
    ) -> LoraEntry:
        """`Library.add`, with the default `weight` and trigger words (default: the file's)."""
        if weight is not None and not _WEIGHTS.lora_weight_allowed(weight):
            raise UserError(
                f"default weight {weight:g} is out of range: use "
                f"{_WEIGHTS.lora_weight_range}, usually 0.5-1"
            )

        async def register(name: str, staged: Staged, inspection: Inspection) -> LoraEntry:
            assert inspection.kind is not None  # an adapter _refusal let through has a kind
            return await self.registry.add(
                name=name,
                sha256=staged.sha256,
                path=f"{self.folder}/{staged.sha256}{SUFFIX}",
                kind=LoraKind(inspection.kind),
                base=ModelBase(inspection.base),
                rank=inspection.rank,
                alpha=inspection.alpha,
                modules=inspection.modules,
                size_bytes=staged.size,
                triggers=_clean_triggers(inspection.triggers if triggers is None else triggers),
                default_weight=1.0 if weight is None else weight,
                added_by=added_by,
                source=source,
                skipped_keys=inspection.skipped,
                dora=inspection.dora,
                embeddings=inspection.embeddings,
            )

        return await self._add(source_path, name, filename, move, register)

    def _refusal(self, inspection: Inspection) -> str | None:
        if inspection.kind in ("embedding", "hypernetwork", "controlnet"):
            return _elsewhere(inspection.kind, "a LoRA")
        return None if inspection.ok else inspection.reason


class EmbeddingLibrary(AdapterLibrary[EmbeddingEntry]):
    folder = "embeddings"
    what = "embedding"
    registry: EmbeddingRepository

    def __init__(self, registry: EmbeddingRepository, data_dir: Path, model_width: int) -> None:
        super().__init__(data_dir, model_width)
        self.registry = registry

    async def add(
        self,
        source_path: Path,
        *,
        name: str | None = None,
        filename: str | None = None,
        added_by: int | None = None,
        source: Source = Source.CLI,
        move: bool = False,
    ) -> EmbeddingEntry:
        """`Library.add`; the name is what prompts write, so it must not be a known word."""

        async def register(name: str, staged: Staged, inspection: Inspection) -> EmbeddingEntry:
            return await self.registry.add(
                name=name,
                sha256=staged.sha256,
                path=f"{self.folder}/{staged.sha256}{SUFFIX}",
                base=ModelBase(inspection.base),
                vectors=inspection.vectors,
                size_bytes=staged.size,
                added_by=added_by,
                source=source,
            )

        return await self._add(source_path, name, filename, move, register)

    def _check_name(self, name: str) -> None:
        from pipeline.lora.embeddings import check_embedding_name
        from pipeline.tokenizer import load_clip_tokenizer

        super()._check_name(name)
        check_embedding_name(name, load_clip_tokenizer())

    def _refusal(self, inspection: Inspection) -> str | None:
        if inspection.kind not in (None, "embedding"):
            return _elsewhere(inspection.kind, "a textual-inversion embedding")
        return None if inspection.ok else inspection.reason


class HypernetworkLibrary(AdapterLibrary[HypernetworkEntry]):
    folder = "hypernetworks"
    what = "hypernetwork"
    registry: HypernetworkRepository

    def __init__(
        self,
        registry: HypernetworkRepository,
        data_dir: Path,
        model_width: int,
        attention_widths: tuple[int, ...],
    ) -> None:
        super().__init__(data_dir, model_width)
        self.registry = registry
        self.attention_widths = attention_widths

    async def add(
        self,
        source_path: Path,
        *,
        name: str | None = None,
        filename: str | None = None,
        added_by: int | None = None,
        source: Source = Source.CLI,
        move: bool = False,
    ) -> HypernetworkEntry:
        """`Library.add`; the name defaults to the file's, as A1111 names hypernetworks."""

        async def register(name: str, staged: Staged, inspection: Inspection) -> HypernetworkEntry:
            layout = inspection.hypernet
            assert layout is not None
            return await self.registry.add(
                name=name,
                sha256=staged.sha256,
                path=f"{self.folder}/{staged.sha256}{SUFFIX}",
                base=ModelBase(inspection.base),
                widths=layout.widths,
                structure=layout.structure,
                activation=layout.activation or "linear",
                layer_norm=layout.layer_norm,
                size_bytes=staged.size,
                added_by=added_by,
                source=source,
            )

        return await self._add(source_path, name, filename, move, register)

    def _inspect(self, path: Path) -> Inspection:
        from pipeline.lora.inspection import inspect_file

        return inspect_file(path, self.model_width, self.attention_widths)

    def _refusal(self, inspection: Inspection) -> str | None:
        if inspection.kind == "hypernetwork":
            return None if inspection.ok else inspection.reason
        if inspection.kind is None:
            return inspection.reason or "it is not a hypernetwork"
        return _elsewhere(inspection.kind, "a hypernetwork")


class ControlNetLibrary(Library[ControlNetEntry, "ControlInspection"]):
    """SD1.5 ControlNet models, in either layout; the engine loads them by name."""

    folder = "controlnets"
    what = "ControlNet"
    registry: ControlNetRepository

    def __init__(self, registry: ControlNetRepository, data_dir: Path, model_width: int) -> None:
        super().__init__(data_dir, model_width)
        self.registry = registry

    async def add(
        self,
        source_path: Path,
        *,
        name: str | None = None,
        filename: str | None = None,
        control_type: ControlType | None = None,
        added_by: int | None = None,
        source: Source = Source.CLI,
        move: bool = False,
    ) -> ControlNetEntry:
        """`Library.add`, with the model's type (default: guessed from the file's name)."""

        async def register(
            name: str, staged: Staged, inspection: ControlInspection
        ) -> ControlNetEntry:
            assert inspection.layout is not None  # an accepted file has a layout
            guessed = guess_control_type(staged.temp.name, inspection.metadata)
            if guessed is ControlType.OTHER:
                guessed = guess_control_type(name)
            return await self.registry.add(
                name=name,
                sha256=staged.sha256,
                path=f"{self.folder}/{staged.sha256}{SUFFIX}",
                control_type=control_type or guessed,
                layout=ControlLayout(inspection.layout),
                base=ModelBase(inspection.base),
                hint_channels=inspection.hint_channels,
                parameters=inspection.parameters,
                size_bytes=staged.size,
                added_by=added_by,
                source=source,
            )

        return await self._add(source_path, name, filename, move, register)

    async def set_control_type(self, name: str, control_type: ControlType) -> ControlNetEntry:
        async with self._lock:
            entry = await self.registry.set_control_type(name, control_type)
            await self.refresh()
        return entry

    def _inspect(self, path: Path) -> ControlInspection:
        from pipeline.control.inspection import inspect_controlnet

        return inspect_controlnet(path, self.model_width)

    def _refusal(self, inspection: ControlInspection) -> str | None:
        return None if inspection.ok else inspection.reason


_KIND_LABELS = {
    "embedding": ("a textual-inversion embedding", "an embedding"),
    "hypernetwork": ("a hypernetwork", "a hypernetwork (`hypernetwork add`)"),
    "controlnet": ("a ControlNet", "a ControlNet (`controlnet add`)"),
}


def _elsewhere(kind: str, this: str) -> str:
    """A refusal naming what the file is and which library takes it."""
    label, add_as = _KIND_LABELS.get(kind, (f"a {kind}", "a LoRA"))
    return f"it is {label}, not {this}: add it as {add_as}"


def _drop_files(folder: Path) -> list[Path]:
    """The drop folder's `.safetensors` files, by name; hidden and temp files are skipped."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() == SUFFIX and not path.name.startswith(".") and path.is_file()
    )


def _clean_triggers(triggers: tuple[str, ...]) -> tuple[str, ...]:
    """At most 20 non-empty trigger words of sane length: they are shown in embeds."""
    cleaned = (word.strip()[:MAX_TRIGGER_CHARS] for word in triggers)
    return tuple(dict.fromkeys(word for word in cleaned if word))[:MAX_TRIGGERS]
