"""Per-guild and per-user preferences and policies, one JSON value per key."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from data.clock import utc_now
from data.db import Database

JsonValue = Any
"""Anything `json.dumps` accepts; the caller (bot/) owns the meaning and types of each key."""


class SettingsRepository:
    """Guild and user settings as plain dicts; a key absent from the dict means 'default'."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def guild(self, guild_id: int) -> dict[str, JsonValue]:
        return await self._get("guild_settings", "guild_id", guild_id)

    async def set_guild(self, guild_id: int, values: Mapping[str, JsonValue]) -> None:
        """Upsert these keys in one transaction; a None value removes the key (back to default)."""
        await self._set("guild_settings", "guild_id", guild_id, values)

    async def user(self, user_id: int) -> dict[str, JsonValue]:
        return await self._get("user_settings", "user_id", user_id)

    async def set_user(self, user_id: int, values: Mapping[str, JsonValue]) -> None:
        """Upsert these keys in one transaction; a None value removes the key (back to default)."""
        await self._set("user_settings", "user_id", user_id, values)

    async def _get(self, table: str, owner: str, owner_id: int) -> dict[str, JsonValue]:
        rows = await self._db.fetch_all(
            f"SELECT key, value FROM {table} WHERE {owner} = ? ORDER BY key", (owner_id,)
        )
        return {row["key"]: json.loads(row["value"]) for row in rows}

    async def _set(
        self, table: str, owner: str, owner_id: int, values: Mapping[str, JsonValue]
    ) -> None:
        # Serialise before the transaction: a value json cannot encode fails with nothing written.
        encoded = {
            key: None if value is None else json.dumps(value) for key, value in values.items()
        }
        now = utc_now()
        async with self._db.transaction() as conn:
            for key, value in encoded.items():
                if value is None:
                    await conn.execute(
                        f"DELETE FROM {table} WHERE {owner} = ? AND key = ?", (owner_id, key)
                    )
                else:
                    await conn.execute(
                        f"INSERT INTO {table} ({owner}, key, value, updated_at)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE"
                        " SET value = excluded.value, updated_at = excluded.updated_at",
                        (owner_id, key, value, now),
                    )
