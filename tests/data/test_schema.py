"""Migrations: a v1 database upgrades to the latest schema and keeps its rows."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from data.db import Database
from data.repositories import Repositories
from data.schema import apply_migrations, available_migrations, latest_version


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [migration.version for migration in available_migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert latest_version() >= 2


async def test_v1_database_upgrades_to_latest_and_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "dreamcord.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        assert await apply_migrations(conn, up_to=1) == [1]
        await conn.execute(
            "INSERT INTO jobs (id, user_id, request_json, created_at, state)"
            " VALUES (?, 7, ?, '2024-01-01T00:00:00.000000Z', 'done')",
            ("a" * 32, '{"prompt": "old fox"}'),
        )
        await conn.execute(
            "INSERT INTO generations (job_id, user_id, operation, request_json, created_at)"
            " VALUES (?, 7, 'txt2img', '{\"prompt\": \"old fox\"}', '2024')",
            ("a" * 32,),
        )
        await conn.execute(
            "INSERT INTO images (generation_id, idx, seed, width, height, path, sha256,"
            " size_bytes, parameters) VALUES (1, 0, 9007199254740991, 512, 512, 'p', ?, 5, 'x')",
            ("b" * 64,),
        )
        await conn.execute(
            "INSERT INTO favourites (user_id, image_id, created_at) VALUES (7, 1, '2024')"
        )
        async with conn.execute("SELECT name FROM sqlite_master WHERE name = 'audit_log'") as c:
            assert await c.fetchone() is None

    database = await Database.open(path)
    try:
        rows = await database.fetch_all("SELECT version FROM schema_migrations ORDER BY version")
        assert [row["version"] for row in rows] == list(range(1, latest_version() + 1))
        repos = Repositories.over(database)
        history = await repos.generations.history(7)
        assert [g.request.prompt for g in history] == ["old fox"]
        assert history[0].images[0].seed == 2**53 - 1
        favourites = await repos.favourites.list(7)
        assert [f.image.id for f in favourites] == [1]
        await repos.audit.record("test", guild_id=1, user_id=7)  # the v2 table exists now
        indexes = await database.fetch_all("SELECT name FROM sqlite_master WHERE type='index'")
        assert "generations_history" in {row["name"] for row in indexes}
    finally:
        await database.close()


async def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "dreamcord.db"
    await (await Database.open(path)).close()
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        assert await apply_migrations(conn) == []


async def test_v4_jobs_get_no_delivery_attempts_and_are_still_delivered(tmp_path: Path) -> None:
    """v5 counts delivery tries; a finished, undelivered v4 job starts at none and is retried."""
    path = tmp_path / "dreamcord.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        assert await apply_migrations(conn, up_to=4) == [1, 2, 3, 4]
        await conn.execute(
            "INSERT INTO jobs (id, user_id, request_json, created_at, finished_at, state)"
            " VALUES (?, 7, ?, '2024-01-01T00:00:00.000000Z', '2024', 'failed')",
            ("c" * 32, '{"prompt": "old fox"}'),
        )
    database = await Database.open(path)
    try:
        repos = Repositories.over(database)
        [job] = await repos.jobs.undelivered()
        assert job.delivery_attempts == 0 and job.delivery_failed_at is None
        assert await repos.jobs.count_delivery_attempt(job.id) == 1
        await repos.jobs.mark_delivery_failed(job.id)
        assert await repos.jobs.undelivered() == []
    finally:
        await database.close()


async def test_v7_generations_upgrade_to_take_edit_operations_keeping_ids_and_keys(
    tmp_path: Path,
) -> None:
    """v8 rebuilds `generations` for 'inpaint' and 'outpaint'; rows, ids, the id counter and
    the foreign keys of images survive."""
    path = tmp_path / "dreamcord.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA foreign_keys = ON")
        assert await apply_migrations(conn, up_to=7) == list(range(1, 8))
        for job in ("a", "b"):
            await conn.execute(
                "INSERT INTO jobs (id, user_id, request_json, created_at, state)"
                " VALUES (?, 7, '{}', '2024', 'done')",
                (job * 32,),
            )
        for job in ("a", "b"):
            await conn.execute(
                "INSERT INTO generations (job_id, user_id, operation, request_json, created_at)"
                " VALUES (?, 7, 'txt2img', '{\"prompt\": \"a fox\"}', '2024')",
                (job * 32,),
            )
        await conn.execute(
            "INSERT INTO images (generation_id, idx, seed, width, height, path, sha256,"
            " size_bytes, parameters) VALUES (1, 0, 1, 64, 64, 'p', ?, 5, 'x')",
            ("b" * 64,),
        )
        # The newest generation is gone for good: its id must still never come back.
        await conn.execute("DELETE FROM generations WHERE id = 2")
        assert await apply_migrations(conn) == list(range(8, latest_version() + 1))
        await conn.execute(
            "INSERT INTO jobs (id, user_id, request_json, created_at, state)"
            " VALUES (?, 7, '{}', '2024', 'done')",
            ("c" * 32,),
        )
        cursor = await conn.execute(
            "INSERT INTO generations (job_id, user_id, operation, parent_image_id,"
            " request_json, created_at) VALUES (?, 7, 'outpaint', 1, '{}', '2024')",
            ("c" * 32,),
        )
        assert cursor.lastrowid == 3, "id 2 was handed out once: never again"
        async with conn.execute("PRAGMA foreign_keys") as keys:
            assert (await keys.fetchone())[0] == 1, "foreign keys are on again"
        try:
            await conn.execute(
                "INSERT INTO images (generation_id, idx, seed, width, height, path, sha256,"
                " size_bytes, parameters) VALUES (99, 0, 1, 64, 64, 'p', ?, 5, 'x')",
                ("c" * 64,),
            )
        except aiosqlite.IntegrityError:
            pass
        else:
            raise AssertionError("an image of a missing generation was accepted")
    database = await Database.open(path)
    try:
        generation = await Repositories.over(database).generations.get(1)
        assert generation is not None and generation.images[0].path == "p"
    finally:
        await database.close()
