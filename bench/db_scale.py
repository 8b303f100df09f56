"""How the history and favourites queries scale: a database with 200,000 images.

Run: python bench/db_scale.py [--images 200000] [--users 200]
Fills a temporary database through the real schema, then times the repository calls the bot
makes for /history and /favourites (first page and a deep page) and prints their query plans,
which must show index searches, not scans.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# Run as a script, the repository root is not on the path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.db import Database
from data.favourites import FAVOURITES_PAGE_SQL
from data.repositories import Repositories

IMAGES_PER_GENERATION = 4
HEAVY_USER = 1
HEAVY_SHARE = 0.10
"""One power user owns this share of all generations: the worst case for deep pages."""
CHUNK = 5000
RUNS = 50
REQUEST = '{"prompt": "a fox in the snow", "seed": 1}'
STAMP = "2024-01-01T00:00:00.000000Z"
HISTORY_ROWS = "SELECT * FROM generations WHERE user_id = ? AND deleted_at IS NULL"


async def fill(db: Database, images: int, users: int, rng: random.Random) -> None:
    generations = images // IMAGES_PER_GENERATION
    for start in range(0, generations, CHUNK):
        ids = range(start + 1, min(start + CHUNK, generations) + 1)
        owners = [HEAVY_USER if rng.random() < HEAVY_SHARE else rng.randint(2, users) for _ in ids]
        async with db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO jobs (id, state, user_id, request_json, created_at)"
                " VALUES (?, 'done', ?, ?, ?)",
                [
                    (f"{g:032x}", owner, REQUEST, STAMP)
                    for g, owner in zip(ids, owners, strict=True)
                ],
            )
            await conn.executemany(
                "INSERT INTO generations (id, job_id, user_id, operation, parent_image_id,"
                " request_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (g, f"{g:032x}", owner, *_parent(g, start, rng), REQUEST, STAMP)
                    for g, owner in zip(ids, owners, strict=True)
                ],
            )
            await conn.executemany(
                "INSERT INTO images (id, generation_id, idx, seed, width, height, path, sha256,"
                " size_bytes, parameters) VALUES (?, ?, ?, ?, 512, 512, ?, ?, 400000, ?)",
                [
                    (
                        (g - 1) * IMAGES_PER_GENERATION + idx + 1,
                        g,
                        idx,
                        rng.randrange(2**53),
                        f"{g:02x}/{idx:02x}/{g:060x}{idx:04x}.png",
                        f"{g:060x}{idx:04x}",
                        "a fox in the snow\nSteps: 25, Sampler: DPM++ 2M Karras",
                    )
                    for g in ids
                    for idx in range(IMAGES_PER_GENERATION)
                ],
            )
    await fill_favourites(db, images, users, rng)


def _parent(generation: int, chunk_start: int, rng: random.Random) -> tuple[str, int | None]:
    # Every fifth generation varies an image of an earlier chunk (already inserted, so the
    # foreign key holds), which gives lineage some depth.
    if chunk_start and generation % 5 == 0:
        return "variation", rng.randint(1, chunk_start * IMAGES_PER_GENERATION)
    return "txt2img", None


async def fill_favourites(db: Database, images: int, users: int, rng: random.Random) -> None:
    """A tenth of the images starred by someone; the heavy user stars 5,000."""
    pairs = {(HEAVY_USER, image) for image in rng.sample(range(1, images + 1), 5000)}
    while len(pairs) < images // 10 + 5000:
        pairs.add((rng.randint(2, users), rng.randint(1, images)))
    rows = [(user, image, STAMP) for user, image in pairs]
    rng.shuffle(rows)
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO favourites (user_id, image_id, created_at) VALUES (?, ?, ?)", rows
        )


async def timed(call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Median and 95th percentile in milliseconds over RUNS calls, after one warm-up."""
    await call()
    samples = []
    for _ in range(RUNS):
        began = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


async def plan(db: Database, sql: str, params: tuple[object, ...]) -> list[str]:
    rows = await db.fetch_all("EXPLAIN QUERY PLAN " + sql, params)
    return [row["detail"] for row in rows]


async def main(images: int, users: int) -> None:
    rng = random.Random(6)
    with tempfile.TemporaryDirectory() as folder:
        db = await Database.open(Path(folder) / "bench.db")
        try:
            await measure(db, images, users, rng)
        finally:
            await db.close()


async def measure(db: Database, images: int, users: int, rng: random.Random) -> None:
    repos = Repositories.over(db)
    began = time.perf_counter()
    await fill(db, images, users, rng)
    fill_s = time.perf_counter() - began

    heavy_generations = (
        await db.fetch_one("SELECT count(*) FROM generations WHERE user_id = ?", (HEAVY_USER,))
    )[0]
    deep_offset = heavy_generations * 9 // 10
    deep_before = (
        await db.fetch_one(
            "SELECT id FROM generations WHERE user_id = ? AND deleted_at IS NULL"
            " ORDER BY id DESC LIMIT 1 OFFSET ?",
            (HEAVY_USER, deep_offset),
        )
    )[0]
    favourite_pages = await repos.favourites.count(HEAVY_USER) // 25
    deep_image = images - 3
    lineage_depth = len(await repos.generations.lineage(deep_image))

    cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("history page 1 (10 generations + images)", lambda: repos.generations.history(1)),
        (
            f"history deep page (keyset, ~{deep_offset} back)",
            lambda: repos.generations.history(1, before=deep_before),
        ),
        (
            f"  rows only, keyset, ~{deep_offset} back",
            lambda: db.fetch_all(
                HISTORY_ROWS + " AND id < ? ORDER BY id DESC LIMIT 10", (HEAVY_USER, deep_before)
            ),
        ),
        (
            f"  rows only, OFFSET {deep_offset} (for contrast)",
            lambda: db.fetch_all(
                HISTORY_ROWS + " ORDER BY id DESC LIMIT 10 OFFSET ?", (HEAVY_USER, deep_offset)
            ),
        ),
        ("favourites page 1 (25)", lambda: repos.favourites.list(HEAVY_USER, 0)),
        (
            f"favourites last page ({favourite_pages})",
            lambda: repos.favourites.list(HEAVY_USER, favourite_pages - 1),
        ),
        ("favourites count", lambda: repos.favourites.count(HEAVY_USER)),
        ("favourite toggle (write + fsync)", lambda: repos.favourites.toggle(2, deep_image)),
        (
            f"lineage of a late image ({lineage_depth} images deep)",
            lambda: repos.generations.lineage(deep_image),
        ),
    ]
    pages = await db.fetch_one(
        "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size"
    )
    db_mb = pages[0] / 1e6
    print(f"{images:,} images, {images // IMAGES_PER_GENERATION:,} generations, {users} users")
    print(f"heavy user: {heavy_generations:,} generations, {favourite_pages * 25:,}+ favs")
    print(f"fill: {fill_s:.1f} s, database file: {db_mb:.0f} MB\n")
    print(f"{'query':<48} {'median ms':>10} {'p95 ms':>8}")
    for label, call in cases:
        median, p95 = await timed(call)
        print(f"{label:<48} {median:>10.2f} {p95:>8.2f}")

    print("\nquery plans")
    plans = {
        "history": (
            HISTORY_ROWS + " AND id < ? ORDER BY id DESC LIMIT 10",
            (HEAVY_USER, deep_before),
        ),
        "history images": (
            "SELECT * FROM images WHERE generation_id IN (?, ?) ORDER BY generation_id, idx",
            (1, 2),
        ),
        "favourites": (FAVOURITES_PAGE_SQL, (HEAVY_USER, 25, 0)),
    }
    for name, (sql, params) in plans.items():
        print(f"  {name}:")
        for step in await plan(db, sql, params):
            print(f"    {step}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.images, arguments.users))
