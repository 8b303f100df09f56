"""Whether a job's channel was NSFW is kept with it and its generation (migration 006)."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from data.repositories import Repositories
from data.schema import apply_migrations
from pipeline.request import GenerationRequest
from tests.data.conftest import new_images


async def test_the_flag_goes_from_the_job_to_its_generation(repos: Repositories) -> None:
    for nsfw in (False, True):
        job = await repos.jobs.create(
            GenerationRequest(prompt="a fox"), user_id=1, guild_id=10, channel_nsfw=nsfw
        )
        assert (await repos.jobs.get(job.id)).channel_nsfw is nsfw  # type: ignore[union-attr]
        await repos.jobs.mark_running(job.id)
        made = await repos.generations.create(job.id, new_images(1, label=job.id))
        assert made.channel_nsfw is nsfw
        assert (await repos.generations.get(made.id)).channel_nsfw is nsfw  # type: ignore[union-attr]


async def test_rows_from_before_the_column_count_as_nsfw(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "old.db") as conn:
        await apply_migrations(conn, up_to=5)
        await conn.execute(
            "INSERT INTO jobs (id, user_id, request_json, created_at) VALUES (?, 1, '{}', 'now')",
            ("a" * 32,),
        )
        await conn.execute(
            "INSERT INTO generations (job_id, user_id, operation, request_json, created_at)"
            " VALUES (?, 1, 'txt2img', '{}', 'now')",
            ("a" * 32,),
        )
        await conn.commit()
        await apply_migrations(conn)
        async with conn.execute("SELECT channel_nsfw FROM generations") as cursor:
            assert [tuple(row) for row in await cursor.fetchall()] == [(1,)]
        async with conn.execute("SELECT channel_nsfw FROM jobs") as cursor:
            assert [tuple(row) for row in await cursor.fetchall()] == [(1,)]
