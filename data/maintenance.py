"""Owner chores behind `dreamcord backup` and `dreamcord stats`."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from data.db import BUSY_TIMEOUT_MS, Database
from data.images import ImageStore
from data.jobs import JobState
from data.location import DATABASE_SUFFIXES
from pipeline.errors import UserError


async def backup(db: Database, dest_path: Path | str) -> Path:
    """Write a consistent, compacted copy of the database to a new file.

    `VACUUM INTO` runs on a connection of its own: in WAL mode it reads one snapshot while the
    bot's connection keeps committing, so a backup never pauses generation.
    """
    dest = Path(dest_path)
    await asyncio.to_thread(_check_destination, dest)
    async with aiosqlite.connect(
        db.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
    ) as conn:
        try:
            await conn.execute("VACUUM INTO ?", (str(dest),))
        except sqlite3.OperationalError as error:
            raise UserError(
                f"could not write the backup {str(dest)!r} ({error}); check that the folder is "
                "writable and has free space"
            ) from None
    return dest


async def stats(db: Database, image_root: Path) -> dict[str, Any]:
    """Row counts, the database's size on disk and the image store's disk use."""
    states = await db.fetch_all("SELECT state, count(*) AS n FROM jobs GROUP BY state")
    counts = await db.fetch_one(
        "SELECT"
        " (SELECT count(*) FROM generations WHERE deleted_at IS NULL) AS generations,"
        " (SELECT count(*) FROM generations WHERE deleted_at IS NOT NULL) AS deleted_generations,"
        " (SELECT count(*) FROM images) AS images,"
        " (SELECT count(*) FROM favourites) AS favourites,"
        " (SELECT count(*) FROM loras) AS loras,"
        " (SELECT count(*) FROM embeddings) AS embeddings"
    )
    assert counts is not None
    by_state = {state.value: 0 for state in JobState}
    by_state.update({row["state"]: row["n"] for row in states})
    image_files, image_bytes = await asyncio.to_thread(ImageStore(image_root).disk_usage)
    return {
        "jobs": by_state,
        **dict(counts),
        "db_bytes": await asyncio.to_thread(_database_bytes, db.path),
        "image_files": image_files,
        "image_bytes": image_bytes,
    }


def _check_destination(dest: Path) -> None:
    if dest.suffix not in DATABASE_SUFFIXES:
        raise UserError(
            f"the backup file {str(dest)!r} must end in .db or .sqlite3, so Dreamcord can open "
            "it when you restore it; for example 'dreamcord-backup.db'"
        )
    if dest.exists():
        raise UserError(
            f"{str(dest)!r} already exists and a backup never overwrites a file; choose a new "
            "name or move the old backup away"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot create the backup folder {str(dest.parent)!r} ({error.strerror}); choose "
            "a folder you can write to"
        ) from None


def _database_bytes(path: Path) -> int:
    """The database with its WAL: until a checkpoint, recent writes live only in the WAL."""
    total = 0
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            total += file.stat().st_size
    return total
