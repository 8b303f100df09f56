"""Many coroutines writing at once: nothing lost, no transaction interleaved with another."""

from __future__ import annotations

import asyncio

from data.db import Database
from data.repositories import Repositories
from tests.data.conftest import finished_generation


async def test_fifty_coroutines_create_generations_and_toggle_favourites(
    db: Database, repos: Repositories
) -> None:
    shared = (await finished_generation(repos, user_id=999, label="shared")).images[0].id
    partial_reads: list[int] = []

    async def user_session(user_id: int) -> None:
        generation = await finished_generation(repos, user_id=user_id, label=f"u{user_id}")
        await asyncio.gather(
            repos.favourites.toggle(user_id, shared),
            repos.favourites.toggle(user_id, generation.images[1].id),
        )

    async def reader() -> None:
        for _ in range(20):
            for user_id in (0, 7, 42):
                for generation in await repos.generations.history(user_id):
                    if len(generation.images) != 2:
                        partial_reads.append(generation.id)
            await asyncio.sleep(0)

    async def toggler(times: int) -> None:
        # One user hammering one image: an odd number of toggles must end favourited.
        await asyncio.gather(*(repos.favourites.toggle(500, shared) for _ in range(times)))

    await asyncio.gather(*(user_session(u) for u in range(50)), reader(), toggler(11))

    assert partial_reads == []
    counts = await db.fetch_one(
        "SELECT (SELECT count(*) FROM generations), (SELECT count(*) FROM images),"
        " (SELECT count(DISTINCT id) FROM images), (SELECT count(*) FROM jobs WHERE state='done')"
    )
    assert tuple(counts) == (51, 102, 102, 51)
    for user_id in range(50):
        history = await repos.generations.history(user_id)
        assert len(history) == 1 and [i.idx for i in history[0].images] == [0, 1]
        assert await repos.favourites.count(user_id) == 2
    assert await repos.favourites.count(500) == 1
    on_shared = await db.fetch_one("SELECT count(*) FROM favourites WHERE image_id = ?", (shared,))
    assert on_shared[0] == 51
