"""A full disk is told as one clear UserError naming where to free space, and leaves no partial
file. SQLite's own "database or disk is full" is made for real with `PRAGMA max_page_count`; a
full file system cannot be made without root, so ENOSPC is raised at the one write call."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from data.db import Database
from data.disk import DiskFull
from data.files import FileStore
from data.repositories import Repositories
from pipeline.errors import UserError
from pipeline.request import GenerationRequest


async def test_a_full_database_is_a_full_disk_not_an_unusable_database(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "dreamcord.db")
    try:
        async with db.transaction() as conn:
            async with conn.execute("PRAGMA page_count") as cursor:
                (pages,) = await cursor.fetchone()
            await conn.execute(f"PRAGMA max_page_count = {pages}")
        jobs = Repositories.over(db).jobs
        with pytest.raises(DiskFull) as full:
            for _ in range(50):  # some rows may still fit in the pages already there
                await jobs.create(GenerationRequest("a fox " * 2000), user_id=1)
        assert str(full.value) == f"the disk is full: free space on {tmp_path}"
        assert isinstance(full.value, UserError)
    finally:
        await db.close()


async def test_a_full_disk_at_start_is_not_called_an_unusable_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error SQLite really raises when it cannot grow a file, at the first migration."""
    real = sqlite3.connect(":memory:")
    real.execute("CREATE TABLE t (x)")
    real.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as caught:
        real.executemany("INSERT INTO t VALUES (?)", [("x" * 4000,)] * 10)
    full_error = caught.value
    assert full_error.sqlite_errorcode == sqlite3.SQLITE_FULL

    async def migrations_on_a_full_disk(_conn: object) -> None:
        raise full_error

    monkeypatch.setattr("data.db.apply_migrations", migrations_on_a_full_disk)
    with pytest.raises(DiskFull, match=f"free space on {tmp_path}") as full:
        await Database.open(tmp_path / "dreamcord.db")
    assert "not a usable" not in str(full.value)


def test_a_library_upload_on_a_full_disk_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path / "loras")
    store.folder.mkdir()
    monkeypatch.setattr("data.files.os.fdopen", lambda fd, mode: _FullFile(fd))
    with pytest.raises(DiskFull, match="free space on"):
        store.write_temp(b"x" * 1000)
    assert list(store.folder.iterdir()) == []


class _FullFile:
    """A file whose writes fail as on a full disk, after the descriptor was really opened."""

    def __init__(self, fd: int) -> None:
        import os

        os.close(fd)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def write(self, _data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")
