"""The LoRA, embedding, hypernetwork and ControlNet registries: what admins added, named how,
enabled or not."""

from __future__ import annotations

import json
import re
import sqlite3
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

import aiosqlite

from data.clock import utc_now
from data.db import Database
from pipeline.control.model_types import ControlType
from pipeline.errors import UserError

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""ASCII only, so Python's and SQLite's lower() agree and names type easily in a prompt."""


class LoraKind(StrEnum):
    LORA = "lora"
    LOCON = "locon"
    LOHA = "loha"
    LOKR = "lokr"


class ModelBase(StrEnum):
    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    UNKNOWN = "unknown"


class Source(StrEnum):
    ATTACHMENT = "attachment"
    URL = "url"
    FOLDER = "folder"
    CLI = "cli"


@dataclass(frozen=True)
class LoraEntry:
    id: int
    name: str
    sha256: str
    path: str
    kind: LoraKind
    base: ModelBase
    rank: int | None
    alpha: float | None
    modules: int
    size_bytes: int
    triggers: tuple[str, ...]
    default_weight: float
    enabled: bool
    added_by: int | None
    added_at: str
    source: Source
    skipped_keys: int = 0
    """Tensor keys of the file that match no module of the model, left out when patching."""
    dora: bool = False
    embeddings: tuple[str, ...] = ()
    """Tokens of the embeddings the file bundles, usable in a prompt while the LoRA is active."""


@dataclass(frozen=True)
class EmbeddingEntry:
    id: int
    name: str
    sha256: str
    path: str
    base: ModelBase
    vectors: int
    size_bytes: int
    enabled: bool
    added_by: int | None
    added_at: str
    source: Source


@dataclass(frozen=True)
class HypernetworkEntry:
    id: int
    name: str
    sha256: str
    path: str
    base: ModelBase
    widths: tuple[int, ...]
    structure: tuple[float, ...]
    activation: str
    layer_norm: bool
    size_bytes: int
    enabled: bool
    added_by: int | None
    added_at: str
    source: Source


class ControlLayout(StrEnum):
    ORIGINAL = "original"
    """The ControlNet 1.0/1.1 files' LDM names (`control_model.input_blocks...`)."""
    DIFFUSERS = "diffusers"
    """diffusers' `ControlNetModel` state-dict names (`controlnet_down_blocks...`)."""


@dataclass(frozen=True)
class ControlNetEntry:
    id: int
    name: str
    sha256: str
    path: str
    control_type: ControlType
    """What the model follows (canny, depth, ...): guessed from the file's name, settable."""
    layout: ControlLayout
    base: ModelBase
    hint_channels: int
    """Channels of the control map its hint encoder reads (3: an RGB map)."""
    parameters: int
    size_bytes: int
    enabled: bool
    added_by: int | None
    added_at: str
    source: Source


def name_key(name: str, what: str) -> str:
    """The case-insensitive key of a registry name; a UserError if the name is not allowed."""
    if not NAME.fullmatch(name):
        raise UserError(
            f"{what} name {name!r} is not allowed: use 1 to 64 letters, digits, '_', '.' or '-' "
            "(no spaces), for example 'ghibli_style'"
        )
    return name.lower()


Entry = TypeVar("Entry", LoraEntry, EmbeddingEntry, HypernetworkEntry, ControlNetEntry)


class Registry(ABC, Generic[Entry]):
    """What every library's registry shares: lookup by name, search, rename, enable, remove.

    `list` comes last in the class so its name does not shadow the builtin in annotations.
    """

    table: str
    what: str

    def __init__(self, db: Database) -> None:
        self._db = db

    @abstractmethod
    def _entry(self, row: sqlite3.Row) -> Entry: ...

    async def get(self, name: str) -> Entry | None:
        """Look a name up in any letter case; None if no such entry (or not a valid name)."""
        if not NAME.fullmatch(name):
            return None
        row = await self._db.fetch_one(
            f"SELECT * FROM {self.table} WHERE name_key = ?", (name.lower(),)
        )
        return self._entry(row) if row else None

    async def names(self, enabled_only: bool = True) -> list[str]:
        """Display names for autocomplete, sorted case-insensitively."""
        where = " WHERE enabled = 1" if enabled_only else ""
        rows = await self._db.fetch_all(f"SELECT name FROM {self.table}{where} ORDER BY name_key")
        return [row["name"] for row in rows]

    async def rename(self, name: str, new_name: str) -> Entry:
        new_key = name_key(new_name, self.what)
        async with self._db.transaction() as conn:
            entry = await self._require(conn, name)
            clash = await _fetch(conn, f"SELECT name FROM {self.table} WHERE name_key = ?", new_key)
            if clash is not None and clash["name"].lower() != entry.name.lower():
                raise UserError(
                    f"the name {clash['name']!r} is taken by another {self.what}; pick another name"
                )
            await conn.execute(
                f"UPDATE {self.table} SET name = ?, name_key = ? WHERE id = ?",
                (new_name, new_key, entry.id),
            )
            return await self._require(conn, new_name)

    async def set_enabled(self, name: str, enabled: bool) -> Entry:
        async with self._db.transaction() as conn:
            entry = await self._require(conn, name)
            await conn.execute(
                f"UPDATE {self.table} SET enabled = ? WHERE id = ?", (int(enabled), entry.id)
            )
            return await self._require(conn, name)

    async def remove(self, name: str) -> Entry:
        """Forget an entry; returns it so the caller can delete its file."""
        async with self._db.transaction() as conn:
            entry = await self._require(conn, name)
            await conn.execute(f"DELETE FROM {self.table} WHERE id = ?", (entry.id,))
            return entry

    async def _insert(self, conn: aiosqlite.Connection, values: dict[str, Any]) -> Entry:
        """Insert a row, turning a taken name or an already-registered file into a UserError."""
        key = name_key(values["name"], self.what)
        clash = await _fetch(conn, f"SELECT name FROM {self.table} WHERE name_key = ?", key)
        if clash is not None:
            raise UserError(
                f"the name {clash['name']!r} is taken by another {self.what}; choose another "
                "name or remove the old one first"
            )
        same_file = await _fetch(
            conn, f"SELECT name FROM {self.table} WHERE sha256 = ?", values["sha256"]
        )
        if same_file is not None:
            raise UserError(
                f"this file is already registered as {same_file['name']!r}; use that name or "
                "rename it"
            )
        values = {**values, "name_key": key, "added_at": utc_now()}
        columns = ", ".join(values)
        placeholders = ", ".join(f":{column}" for column in values)
        await conn.execute(f"INSERT INTO {self.table} ({columns}) VALUES ({placeholders})", values)
        return await self._require(conn, values["name"])

    async def _require(self, conn: aiosqlite.Connection, name: str) -> Entry:
        row = await _fetch(conn, f"SELECT * FROM {self.table} WHERE name_key = ?", name.lower())
        if row is None:
            raise UserError(
                f"there is no {self.what} named {name!r}; the list command shows the names"
            )
        return self._entry(row)

    async def list(self, search: str | None = None, enabled: bool | None = None) -> list[Entry]:
        """Entries by name; `search` matches anywhere in the name, in any case."""
        sql = f"SELECT * FROM {self.table} WHERE 1"
        params: list[Any] = []
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            sql += " AND name_key LIKE ? ESCAPE '\\'"
            params.append(f"%{escaped}%")
        if enabled is not None:
            sql += " AND enabled = ?"
            params.append(int(enabled))
        rows = await self._db.fetch_all(sql + " ORDER BY name_key", params)
        return [self._entry(row) for row in rows]


async def _fetch(conn: aiosqlite.Connection, sql: str, *params: Any) -> sqlite3.Row | None:
    async with conn.execute(sql, params) as cursor:
        return await cursor.fetchone()


class LoraRepository(Registry[LoraEntry]):
    table = "loras"
    what = "LoRA"

    async def add(
        self,
        *,
        name: str,
        sha256: str,
        path: str,
        kind: LoraKind,
        base: ModelBase,
        modules: int,
        size_bytes: int,
        source: Source,
        rank: int | None = None,
        alpha: float | None = None,
        triggers: tuple[str, ...] = (),
        default_weight: float = 1.0,
        added_by: int | None = None,
        skipped_keys: int = 0,
        dora: bool = False,
        embeddings: tuple[str, ...] = (),
    ) -> LoraEntry:
        async with self._db.transaction() as conn:
            return await self._insert(
                conn,
                {
                    "name": name,
                    "sha256": sha256,
                    "path": path,
                    "kind": LoraKind(kind).value,
                    "base": ModelBase(base).value,
                    "rank": rank,
                    "alpha": alpha,
                    "modules": modules,
                    "size_bytes": size_bytes,
                    "triggers": json.dumps(list(triggers)),
                    "default_weight": default_weight,
                    "added_by": added_by,
                    "source": Source(source).value,
                    "skipped_keys": skipped_keys,
                    "dora": int(dora),
                    "embeddings": json.dumps(list(embeddings)),
                },
            )

    def _entry(self, row: sqlite3.Row) -> LoraEntry:
        return LoraEntry(
            id=row["id"],
            name=row["name"],
            sha256=row["sha256"],
            path=row["path"],
            kind=LoraKind(row["kind"]),
            base=ModelBase(row["base"]),
            rank=row["rank"],
            alpha=row["alpha"],
            modules=row["modules"],
            size_bytes=row["size_bytes"],
            triggers=tuple(json.loads(row["triggers"])),
            default_weight=row["default_weight"],
            enabled=bool(row["enabled"]),
            added_by=row["added_by"],
            added_at=row["added_at"],
            source=Source(row["source"]),
            skipped_keys=row["skipped_keys"],
            dora=bool(row["dora"]),
            embeddings=tuple(json.loads(row["embeddings"])),
        )


class EmbeddingRepository(Registry[EmbeddingEntry]):
    table = "embeddings"
    what = "embedding"

    async def add(
        self,
        *,
        name: str,
        sha256: str,
        path: str,
        base: ModelBase,
        vectors: int,
        size_bytes: int,
        source: Source,
        added_by: int | None = None,
    ) -> EmbeddingEntry:
        async with self._db.transaction() as conn:
            return await self._insert(
                conn,
                {
                    "name": name,
                    "sha256": sha256,
                    "path": path,
                    "base": ModelBase(base).value,
                    "vectors": vectors,
                    "size_bytes": size_bytes,
                    "added_by": added_by,
                    "source": Source(source).value,
                },
            )

    def _entry(self, row: sqlite3.Row) -> EmbeddingEntry:
        return EmbeddingEntry(
            id=row["id"],
            name=row["name"],
            sha256=row["sha256"],
            path=row["path"],
            base=ModelBase(row["base"]),
            vectors=row["vectors"],
            size_bytes=row["size_bytes"],
            enabled=bool(row["enabled"]),
            added_by=row["added_by"],
            added_at=row["added_at"],
            source=Source(row["source"]),
        )


class HypernetworkRepository(Registry[HypernetworkEntry]):
    table = "hypernetworks"
    what = "hypernetwork"

    async def add(
        self,
        *,
        name: str,
        sha256: str,
        path: str,
        base: ModelBase,
        widths: tuple[int, ...],
        structure: tuple[float, ...],
        activation: str,
        layer_norm: bool,
        size_bytes: int,
        source: Source,
        added_by: int | None = None,
    ) -> HypernetworkEntry:
        async with self._db.transaction() as conn:
            return await self._insert(
                conn,
                {
                    "name": name,
                    "sha256": sha256,
                    "path": path,
                    "base": ModelBase(base).value,
                    "widths": json.dumps(list(widths)),
                    "structure": json.dumps(list(structure)),
                    "activation": activation,
                    "layer_norm": int(layer_norm),
                    "size_bytes": size_bytes,
                    "added_by": added_by,
                    "source": Source(source).value,
                },
            )

    def _entry(self, row: sqlite3.Row) -> HypernetworkEntry:
        return HypernetworkEntry(
            id=row["id"],
            name=row["name"],
            sha256=row["sha256"],
            path=row["path"],
            base=ModelBase(row["base"]),
            widths=tuple(json.loads(row["widths"])),
            structure=tuple(json.loads(row["structure"])),
            activation=row["activation"],
            layer_norm=bool(row["layer_norm"]),
            size_bytes=row["size_bytes"],
            enabled=bool(row["enabled"]),
            added_by=row["added_by"],
            added_at=row["added_at"],
            source=Source(row["source"]),
        )


class ControlNetRepository(Registry[ControlNetEntry]):
    table = "controlnets"
    what = "ControlNet"

    async def add(
        self,
        *,
        name: str,
        sha256: str,
        path: str,
        control_type: ControlType,
        layout: ControlLayout,
        base: ModelBase,
        hint_channels: int,
        parameters: int,
        size_bytes: int,
        source: Source,
        added_by: int | None = None,
    ) -> ControlNetEntry:
        async with self._db.transaction() as conn:
            return await self._insert(
                conn,
                {
                    "name": name,
                    "sha256": sha256,
                    "path": path,
                    "control_type": ControlType(control_type).value,
                    "layout": ControlLayout(layout).value,
                    "base": ModelBase(base).value,
                    "hint_channels": hint_channels,
                    "parameters": parameters,
                    "size_bytes": size_bytes,
                    "added_by": added_by,
                    "source": Source(source).value,
                },
            )

    async def set_control_type(self, name: str, control_type: ControlType) -> ControlNetEntry:
        async with self._db.transaction() as conn:
            entry = await self._require(conn, name)
            await conn.execute(
                "UPDATE controlnets SET control_type = ? WHERE id = ?",
                (ControlType(control_type).value, entry.id),
            )
            return await self._require(conn, name)

    def _entry(self, row: sqlite3.Row) -> ControlNetEntry:
        return ControlNetEntry(
            id=row["id"],
            name=row["name"],
            sha256=row["sha256"],
            path=row["path"],
            control_type=ControlType(row["control_type"]),
            layout=ControlLayout(row["layout"]),
            base=ModelBase(row["base"]),
            hint_channels=row["hint_channels"],
            parameters=row["parameters"],
            size_bytes=row["size_bytes"],
            enabled=bool(row["enabled"]),
            added_by=row["added_by"],
            added_at=row["added_at"],
            source=Source(row["source"]),
        )
