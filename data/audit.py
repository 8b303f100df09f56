"""The admin audit log: who changed what, for `/audit` and for owners reading the database."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from data.clock import utc_now
from data.db import Database

AUDIT_PAGE = 25


@dataclass(frozen=True)
class AuditEntry:
    id: int
    guild_id: int | None
    user_id: int | None
    action: str
    target: str | None
    detail: dict[str, Any]
    created_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AuditEntry:
        values = dict(row)
        values["detail"] = json.loads(values["detail"])
        return cls(**values)


class AuditRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        action: str,
        *,
        guild_id: int | None,
        user_id: int | None,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry, for example action='lora.rename', target='old', detail={'to': ...}."""
        detail_json = json.dumps(detail or {})
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO audit_log (guild_id, user_id, action, target, detail, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
                (guild_id, user_id, action, target, detail_json, utc_now()),
            )
            row = await cursor.fetchone()
            await cursor.close()
        assert row is not None
        return AuditEntry.from_row(row)

    async def list_for_guild(
        self, guild_id: int, limit: int = AUDIT_PAGE, before: int | None = None
    ) -> list[AuditEntry]:
        """A guild's entries newest first; pass the last id shown as `before` for the next page."""
        rows = await self._db.fetch_all(
            "SELECT * FROM audit_log WHERE guild_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (guild_id, before if before is not None else 2**63 - 1, limit),
        )
        return [AuditEntry.from_row(row) for row in rows]
