"""Schema migrations: numbered SQL files applied in order, each in its own transaction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import aiosqlite

from data.clock import utc_now
from pipeline.errors import UserError

_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
REBUILDS = "-- rebuilds tables"
"""A line that marks a migration rebuilding a table (the only way SQLite changes a CHECK):
it runs with foreign keys off, and commits only if `PRAGMA foreign_key_check` finds nothing."""


@dataclass(frozen=True)
class Migration:
    """One SQL file from `data/migrations`, named `NNN_what_it_does.sql`."""

    version: int
    name: str
    sql: str

    @property
    def rebuilds(self) -> bool:
        return REBUILDS in self.sql.splitlines()


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    migrations = []
    for entry in resources.files("data").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            migrations.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    migrations.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in migrations]
    # A gap or duplicate means a file was misnamed; applying around it would skip schema.
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migration versions must be 1..n without gaps, found {versions}")
    return migrations


def latest_version() -> int:
    return available_migrations()[-1].version


async def current_version(conn: aiosqlite.Connection) -> int:
    """The highest applied version, 0 for a new database."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    async with conn.execute("SELECT max(version) FROM schema_migrations") as cursor:
        row = await cursor.fetchone()
    return int(row[0] or 0) if row else 0


async def apply_migrations(conn: aiosqlite.Connection, up_to: int | None = None) -> list[int]:
    """Bring the schema to `up_to` (default: latest); returns the versions applied.

    Each file runs with its bookkeeping row in one transaction, so a crash mid-migration
    leaves the database at the previous version rather than half-changed.
    """
    migrations = available_migrations()
    target = migrations[-1].version if up_to is None else up_to
    current = await current_version(conn)
    if current > migrations[-1].version:
        raise UserError(
            f"the database is at schema version {current}, newer than this Dreamcord knows "
            f"({migrations[-1].version}); upgrade Dreamcord, or restore a backup made by this "
            "version"
        )
    applied = []
    for migration in migrations:
        if current < migration.version <= target:
            await _apply(conn, migration)
            applied.append(migration.version)
    return applied


async def _apply(conn: aiosqlite.Connection, migration: Migration) -> None:
    # executescript cannot take parameters; version is an int and name matched _FILE_NAME.
    script = (
        "BEGIN IMMEDIATE;\n"
        f"{migration.sql}\n;\n"
        "INSERT INTO schema_migrations (version, name, applied_at) "
        f"VALUES ({migration.version}, '{migration.name}', '{utc_now()}');\n"
    )
    # foreign_keys cannot change inside a transaction: off before, back as it was after.
    async with conn.execute("PRAGMA foreign_keys") as cursor:
        row = await cursor.fetchone()
    keys_on = bool(row and row[0])
    if migration.rebuilds:
        await conn.execute("PRAGMA foreign_keys = OFF")
    try:
        await conn.executescript(script)
        if migration.rebuilds:
            async with conn.execute("PRAGMA foreign_key_check") as cursor:
                broken = list(await cursor.fetchall())
            if broken:
                raise RuntimeError(
                    f"migration {migration.version} would break foreign keys: {broken[:5]}"
                )
        await conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise
    finally:
        if migration.rebuilds and keys_on:
            await conn.execute("PRAGMA foreign_keys = ON")
