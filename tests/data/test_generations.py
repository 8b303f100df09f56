"""Generations: stored with their images atomically, lineage, history, deletion."""

from __future__ import annotations

import aiosqlite
import pytest

from data.db import Database
from data.generations import NewImage
from data.jobs import InvalidTransition, JobState
from data.repositories import Repositories
from pipeline.request import Mode
from tests.data.conftest import fake_stored, finished_generation, new_images, running_job


async def test_create_stores_images_and_finishes_the_job(repos: Repositories) -> None:
    job = await running_job(repos, user_id=5, seed=100)
    generation = await repos.generations.create(job.id, new_images(4, seed=100))
    assert (generation.user_id, generation.guild_id, generation.channel_id) == (5, 10, 20)
    assert generation.operation is Mode.TXT2IMG
    assert generation.request == job.request
    assert [image.idx for image in generation.images] == [0, 1, 2, 3]
    assert [image.seed for image in generation.images] == [100, 101, 102, 103]
    assert await repos.generations.get(generation.id) == generation
    assert await repos.generations.images_of(generation.id) == list(generation.images)
    assert await repos.generations.image(generation.images[2].id) == generation.images[2]
    assert (await repos.jobs.get(job.id)).state is JobState.DONE


async def test_create_for_a_cancelled_job_writes_nothing(repos: Repositories, db: Database) -> None:
    job = await running_job(repos)
    await repos.jobs.mark_cancelled(job.id)
    with pytest.raises(InvalidTransition, match="cancelled"):
        await repos.generations.create(job.id, new_images(2))
    assert (await db.fetch_one("SELECT count(*) FROM images"))[0] == 0
    assert (await db.fetch_one("SELECT count(*) FROM generations"))[0] == 0


async def test_a_failing_image_insert_rolls_back_the_generation_and_job(
    repos: Repositories, db: Database
) -> None:
    job = await running_job(repos)
    broken = NewImage(fake_stored("x"), seed=1, width=0, height=512, parameters="")
    with pytest.raises(aiosqlite.IntegrityError):
        await repos.generations.create(job.id, [*new_images(1), broken])
    assert (await db.fetch_one("SELECT count(*) FROM generations"))[0] == 0
    assert (await repos.jobs.get(job.id)).state is JobState.RUNNING


async def test_largest_exact_seed_round_trips_as_an_integer(repos: Repositories) -> None:
    job = await running_job(repos)
    top = 2**53 - 1
    images = [NewImage(fake_stored("top"), top, 512, 512, "p", variation_seed=top)]
    generation = await repos.generations.create(job.id, images)
    stored = await repos.generations.image(generation.images[0].id)
    assert stored.seed == top and type(stored.seed) is int
    assert stored.variation_seed == top


@pytest.mark.parametrize("seed", [2**53, -1, 2**63 - 1])
async def test_seeds_outside_the_exact_range_are_refused(repos: Repositories, seed: int) -> None:
    job = await running_job(repos)
    with pytest.raises(ValueError, match="2\\*\\*53"):
        await repos.generations.create(job.id, [NewImage(fake_stored("s"), seed, 64, 64, "p")])


async def test_the_schema_itself_refuses_inexact_seeds(db: Database) -> None:
    """The CHECK guards writers that bypass the repository, such as a later migration."""
    with pytest.raises(aiosqlite.IntegrityError):
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO images (generation_id, idx, seed, width, height, path, sha256,"
                " size_bytes, parameters) VALUES (1, 0, ?, 1, 1, 'p', ?, 1, '')",
                (2**53, "a" * 64),
            )


async def test_lineage_walks_from_an_image_up_to_the_root(repos: Repositories) -> None:
    root = await finished_generation(repos, count=4)
    child = await finished_generation(repos, parent_image_id=root.images[1].id)
    grandchild = await finished_generation(repos, parent_image_id=child.images[0].id)
    assert child.operation is Mode.VARIATION
    lineage = await repos.generations.lineage(grandchild.images[1].id)
    assert [image.id for image in lineage] == [
        grandchild.images[1].id,
        child.images[0].id,
        root.images[1].id,
    ]
    assert [i.id for i in await repos.generations.lineage(root.images[0].id)] == [root.images[0].id]
    assert await repos.generations.lineage(99999) == []


async def test_history_is_newest_first_and_pages_by_keyset(repos: Repositories) -> None:
    mine = [(await finished_generation(repos, user_id=1, label=str(i))).id for i in range(5)]
    await finished_generation(repos, user_id=2)
    first = await repos.generations.history(1, limit=2)
    assert [g.id for g in first] == [mine[4], mine[3]]
    assert all(len(g.images) == 2 for g in first)
    second = await repos.generations.history(1, limit=2, before=first[-1].id)
    assert [g.id for g in second] == [mine[2], mine[1]]
    last = await repos.generations.history(1, limit=2, before=second[-1].id)
    assert [g.id for g in last] == [mine[0]]
    assert await repos.generations.history(3) == []


async def test_mark_deleted_hides_from_history_and_drops_favourites(
    repos: Repositories,
) -> None:
    kept = await finished_generation(repos, user_id=1, label="kept")
    gone = await finished_generation(repos, user_id=1, label="gone")
    await repos.favourites.toggle(1, gone.images[0].id)
    await repos.favourites.toggle(2, gone.images[1].id)
    await repos.favourites.toggle(1, kept.images[0].id)
    assert await repos.generations.mark_deleted(gone.id) is True
    assert await repos.generations.mark_deleted(gone.id) is False
    assert [g.id for g in await repos.generations.history(1)] == [kept.id]
    assert await repos.favourites.count(2) == 0
    assert [f.image.id for f in await repos.favourites.list(1)] == [kept.images[0].id]
    deleted = await repos.generations.get(gone.id)
    assert deleted is not None and deleted.deleted_at is not None


async def test_set_message_and_image_paths(repos: Repositories) -> None:
    generation = await finished_generation(repos)
    await repos.generations.set_message(generation.id, 777)
    assert (await repos.generations.get(generation.id)).message_id == 777
    assert await repos.generations.image_paths() == {i.path for i in generation.images}


async def test_generation_ids_are_never_reused(repos: Repositories, db: Database) -> None:
    """Old buttons carry generation ids: a deleted newest row must not hand its id out again."""
    first = await finished_generation(repos, label="a")
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM images WHERE generation_id = ?", (first.id,))
        await conn.execute("DELETE FROM generations WHERE id = ?", (first.id,))
    second = await finished_generation(repos, label="b")
    assert second.id > first.id


async def test_each_images_safety_verdict_is_kept_and_unknown_stays_unknown(
    repos: Repositories, db: Database
) -> None:
    job = await running_job(repos)
    verdicts = [True, False, None]
    images = [
        NewImage(fake_stored(f"v{i}"), i, 512, 512, "p", flagged=verdict)
        for i, verdict in enumerate(verdicts)
    ]
    generation = await repos.generations.create(job.id, images)
    stored = await repos.generations.get(generation.id)
    assert [image.flagged for image in stored.images] == verdicts
    rows = await db.fetch_all("SELECT flagged FROM images ORDER BY idx")
    assert [row["flagged"] for row in rows] == [1, 0, None]
    with pytest.raises(aiosqlite.IntegrityError):
        async with db.transaction() as conn:
            await conn.execute("UPDATE images SET flagged = 2")
