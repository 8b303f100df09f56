"""Backups and stats."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from data.db import Database
from data.images import PNG_SIGNATURE, ImageStore
from data.maintenance import backup, stats
from data.repositories import Repositories
from pipeline.errors import UserError
from pipeline.request import GenerationRequest
from tests.data.conftest import finished_generation


async def test_backup_is_a_consistent_copy_taken_while_writes_go_on(
    db: Database, repos: Repositories, tmp_path: Path
) -> None:
    for i in range(5):
        await finished_generation(repos, label=str(i))

    async def keep_writing() -> int:
        written = 0
        for _ in range(30):
            await repos.jobs.create(GenerationRequest(prompt="more"), user_id=2)
            written += 1
        return written

    dest = tmp_path / "backups" / "copy.db"
    written, result = await asyncio.gather(keep_writing(), backup(db, dest))
    assert written == 30 and result == dest
    copy = await Database.open(dest)
    try:
        assert (await copy.fetch_one("PRAGMA integrity_check"))[0] == "ok"
        assert (await copy.fetch_one("SELECT count(*) FROM generations"))[0] == 5
        assert (await copy.fetch_one("SELECT count(*) FROM images"))[0] == 10
    finally:
        await copy.close()
    assert (await db.fetch_one("SELECT count(*) FROM jobs"))[0] == 35


async def test_backup_refuses_an_existing_file(db: Database, tmp_path: Path) -> None:
    dest = tmp_path / "old.db"
    dest.write_bytes(b"precious")
    with pytest.raises(UserError, match=r"already exists.*new name"):
        await backup(db, dest)
    assert dest.read_bytes() == b"precious"


async def test_backup_refuses_a_name_it_could_not_restore(db: Database, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"\.db or \.sqlite3"):
        await backup(db, tmp_path / "copy.bak")


async def test_stats_counts_rows_and_disk_use(
    db: Database, repos: Repositories, tmp_path: Path
) -> None:
    generation = await finished_generation(repos, count=3)
    await finished_generation(repos, count=1, label="b")
    await repos.jobs.create(GenerationRequest(prompt="waiting"), user_id=3)
    await repos.favourites.toggle(1, generation.images[0].id)
    await repos.generations.mark_deleted(generation.id)
    store = ImageStore(tmp_path / "images")
    store.put(PNG_SIGNATURE + b"1234")
    result = await stats(db, store.root)
    assert result["jobs"] == {"queued": 1, "running": 0, "done": 2, "failed": 0, "cancelled": 0}
    assert (result["generations"], result["deleted_generations"], result["images"]) == (1, 1, 4)
    assert (result["favourites"], result["loras"], result["embeddings"]) == (0, 0, 0)
    assert result["db_bytes"] > 0
    assert (result["image_files"], result["image_bytes"]) == (1, len(PNG_SIGNATURE) + 4)
