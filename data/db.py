"""The one SQLite connection, and the single path every write goes through."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from data.disk import is_disk_full, reporting_full_disk
from data.location import check_database_path
from data.schema import apply_migrations
from pipeline.errors import UserError

BUSY_TIMEOUT_MS = 5000
"""How long to wait on a lock held by another connection (a backup, the sqlite3 shell)."""

MIN_SQLITE = (3, 37, 0)
"""STRICT tables need SQLite 3.37."""

Params = Iterable[Any]


class Database:
    """One aiosqlite connection in WAL mode, with writes serialised by an asyncio lock.

    All writes happen inside `transaction()`. Reads take the same lock: with one connection, a
    read run between the statements of another coroutine's open transaction would see rows that
    transaction may still roll back. The connection serialises statements anyway, so the lock
    costs nothing but that guarantee. Keep transactions short and never await other I/O in one.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.path = path

    @classmethod
    async def open(cls, path: Path | str) -> Database:
        """Check the location, connect, set the pragmas and migrate to the latest schema."""
        path = Path(path)
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise UserError(
                f"SQLite {sqlite3.sqlite_version} is too old; Dreamcord needs 3.37 or newer "
                "(use Python 3.11+ from python.org or the Docker image)"
            )
        with reporting_full_disk(path.parent):
            await asyncio.to_thread(check_database_path, path)
            conn = await aiosqlite.connect(
                path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
            )
        try:
            with reporting_full_disk(path.parent):
                await _configure(conn, path)
                await apply_migrations(conn)
        except BaseException:
            await conn.close()
            raise
        conn.row_factory = sqlite3.Row
        return cls(conn, path)

    async def close(self) -> None:
        async with self._lock:
            # Lets SQLite refresh planner statistics that the session showed to be stale.
            await self._conn.execute("PRAGMA optimize")
            await self._conn.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Hold the write lock for one `BEGIN IMMEDIATE ... COMMIT`; roll back on any error.

        IMMEDIATE takes SQLite's write lock at the start, so a transaction never fails halfway
        with SQLITE_BUSY because another connection began writing after it read.
        """
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                with reporting_full_disk(self.path.parent):
                    yield self._conn
                    await self._conn.execute("COMMIT")
            except BaseException:
                # ROLLBACK fails only if the transaction already ended: a COMMIT still in
                # flight when the caller was cancelled. The original exception matters more.
                with contextlib.suppress(sqlite3.OperationalError):
                    await self._conn.execute("ROLLBACK")
                raise

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        async with self._lock, self._conn.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        async with self._lock, self._conn.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())


async def _configure(conn: aiosqlite.Connection, path: Path) -> None:
    try:
        async with conn.execute("PRAGMA journal_mode = WAL") as cursor:
            row = await cursor.fetchone()
    except sqlite3.DatabaseError as error:
        if is_disk_full(error):  # a sound database on a full disk: `open` says so
            raise
        raise UserError(
            f"{str(path)!r} is not a usable SQLite database ({error}); move it aside or point "
            "DATA_DIR at another folder, then start again"
        ) from None
    if row is None or str(row[0]).lower() != "wal":
        raise UserError(
            f"SQLite could not switch {str(path)!r} to WAL mode; put DATA_DIR on a local disk"
        )
    await conn.execute("PRAGMA foreign_keys = ON")
    # FULL: a commit survives power loss too. Dreamcord writes a few rows a second at most,
    # and a lost `delivered_at` would mean posting a result twice.
    await conn.execute("PRAGMA synchronous = FULL")
