"""Finished jobs as generations with their images, lineage and per-user history."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from data.clock import utc_now
from data.db import Database
from data.images import StoredImage
from data.jobs import JobState, transition
from pipeline.request import MAX_SEED, GenerationRequest, Mode

HISTORY_PAGE = 10
MAX_LINEAGE = 1000
"""Guards the lineage walk; parents always predate children, so this is never reached."""


@dataclass(frozen=True)
class Image:
    id: int
    generation_id: int
    idx: int
    seed: int
    variation_seed: int | None
    width: int
    height: int
    path: str
    sha256: str
    size_bytes: int
    parameters: str
    flagged: bool | None = None
    """The safety checker's verdict; None when no checker ran."""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Image:
        values = {name: row[name] for name in cls.__dataclass_fields__}
        if values["flagged"] is not None:
            values["flagged"] = bool(values["flagged"])
        return cls(**values)


@dataclass(frozen=True)
class NewImage:
    """One image to store: its file (already written to the image store) and how it was made."""

    stored: StoredImage
    seed: int
    width: int
    height: int
    parameters: str
    variation_seed: int | None = None
    flagged: bool | None = None


@dataclass(frozen=True)
class Generation:
    id: int
    job_id: str
    user_id: int
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    operation: Mode
    parent_image_id: int | None
    request: GenerationRequest
    created_at: str
    deleted_at: str | None
    images: tuple[Image, ...]
    channel_nsfw: bool = True
    """Made in an NSFW channel (or unknown, for rows older than the column): see bot.gallery."""


class GenerationRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, job_id: str, images: Sequence[NewImage], *, parent_image_id: int | None = None
    ) -> Generation:
        """Store a running job's images and mark the job done, all in one transaction.

        The owner, channel and request are copied from the job, the one place they were
        recorded. Raises InvalidTransition when the job is no longer running (cancelled while
        the batch ran): the images are then not wanted.
        """
        if not images:
            raise ValueError("a generation needs at least one image")
        for image in images:
            _check_seed(image.seed)
            if image.variation_seed is not None:
                _check_seed(image.variation_seed)
        now = utc_now()
        async with self._db.transaction() as conn:
            await transition(conn, job_id, JobState.DONE, finished_at=now, error=None)
            async with conn.execute(
                "SELECT user_id, guild_id, channel_id, channel_nsfw, request_json FROM jobs"
                " WHERE id = ?",
                (job_id,),
            ) as cursor:
                job = await cursor.fetchone()
            assert job is not None, "transition() proved the job exists"
            operation = GenerationRequest.from_json(job["request_json"]).mode
            cursor = await conn.execute(
                "INSERT INTO generations (job_id, user_id, guild_id, channel_id, operation,"
                " parent_image_id, request_json, created_at, channel_nsfw)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    job["user_id"],
                    job["guild_id"],
                    job["channel_id"],
                    operation.value,
                    parent_image_id,
                    job["request_json"],
                    now,
                    job["channel_nsfw"],
                ),
            )
            generation_id = cursor.lastrowid
            await conn.executemany(
                "INSERT INTO images (generation_id, idx, seed, variation_seed, width, height,"
                " path, sha256, size_bytes, parameters, flagged)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        generation_id,
                        index,
                        image.seed,
                        image.variation_seed,
                        image.width,
                        image.height,
                        image.stored.path,
                        image.stored.sha256,
                        image.stored.size_bytes,
                        image.parameters,
                        image.flagged,
                    )
                    for index, image in enumerate(images)
                ],
            )
            async with conn.execute(
                "SELECT * FROM generations WHERE id = ?", (generation_id,)
            ) as cursor:
                row = await cursor.fetchone()
            async with conn.execute(
                "SELECT * FROM images WHERE generation_id = ? ORDER BY idx", (generation_id,)
            ) as cursor:
                image_rows = await cursor.fetchall()
        assert row is not None
        return _generation(row, tuple(Image.from_row(image) for image in image_rows))

    async def get(self, generation_id: int) -> Generation | None:
        """A generation by id, deleted or not: old buttons must still explain what they were."""
        row = await self._db.fetch_one("SELECT * FROM generations WHERE id = ?", (generation_id,))
        if row is None:
            return None
        return _generation(row, tuple(await self.images_of(generation_id)))

    async def for_job(self, job_id: str) -> Generation | None:
        """The generation a job made, to deliver it again after a restart."""
        row = await self._db.fetch_one("SELECT id FROM generations WHERE job_id = ?", (job_id,))
        return None if row is None else await self.get(row["id"])

    async def images_of(self, generation_id: int) -> list[Image]:
        rows = await self._db.fetch_all(
            "SELECT * FROM images WHERE generation_id = ? ORDER BY idx", (generation_id,)
        )
        return [Image.from_row(row) for row in rows]

    async def image(self, image_id: int) -> Image | None:
        row = await self._db.fetch_one("SELECT * FROM images WHERE id = ?", (image_id,))
        return Image.from_row(row) if row else None

    async def lineage(self, image_id: int) -> list[Image]:
        """The image, then its parent image, and so on up to the first txt2img ([] if unknown)."""
        rows = await self._db.fetch_all(
            "WITH RECURSIVE chain (image_id, depth) AS ("
            "  SELECT ?, 0"
            "  UNION ALL"
            "  SELECT g.parent_image_id, chain.depth + 1 FROM chain"
            "  JOIN images AS i ON i.id = chain.image_id"
            "  JOIN generations AS g ON g.id = i.generation_id"
            "  WHERE g.parent_image_id IS NOT NULL AND chain.depth < ?"
            ") SELECT images.* FROM chain JOIN images ON images.id = chain.image_id"
            " ORDER BY chain.depth",
            (image_id, MAX_LINEAGE),
        )
        return [Image.from_row(row) for row in rows]

    async def history(
        self, user_id: int, limit: int = HISTORY_PAGE, before: int | None = None
    ) -> list[Generation]:
        """A user's generations newest first, without deleted ones.

        Pages by keyset: pass the last id shown as `before` for the next page. Unlike OFFSET,
        this costs the same on page 1000 as on page 1, and a new generation arriving between
        two clicks does not shift the pages.
        """
        rows = await self._db.fetch_all(
            "SELECT * FROM generations WHERE user_id = ? AND deleted_at IS NULL AND id < ?"
            " ORDER BY id DESC LIMIT ?",
            (user_id, before if before is not None else 2**63 - 1, limit),
        )
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        image_rows = await self._db.fetch_all(
            f"SELECT * FROM images WHERE generation_id IN ({', '.join('?' * len(ids))})"
            " ORDER BY generation_id, idx",
            ids,
        )
        by_generation: dict[int, list[Image]] = {generation_id: [] for generation_id in ids}
        for image_row in image_rows:
            by_generation[image_row["generation_id"]].append(Image.from_row(image_row))
        return [_generation(row, tuple(by_generation[row["id"]])) for row in rows]

    async def id_for_message(self, message_id: int) -> int | None:
        """The generation whose result message is `message_id` (a link a user pasted)."""
        row = await self._db.fetch_one(
            "SELECT id FROM generations WHERE message_id = ?", (message_id,)
        )
        return None if row is None else int(row["id"])

    async def set_message(self, generation_id: int, message_id: int) -> None:
        """Remember the result message, so Delete can remove it later."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE generations SET message_id = ? WHERE id = ?", (message_id, generation_id)
            )

    async def mark_deleted(self, generation_id: int) -> bool:
        """Hide a generation from history and drop every favourite of its images.

        Rows stay so lineage and old buttons still resolve; False if already deleted or unknown.
        """
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE generations SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
                (utc_now(), generation_id),
            )
            if cursor.rowcount == 0:
                return False
            await conn.execute(
                "DELETE FROM favourites WHERE image_id IN"
                " (SELECT id FROM images WHERE generation_id = ?)",
                (generation_id,),
            )
            return True

    async def image_paths(self) -> set[str]:
        """Every image file a row points at: what `ImageStore.orphan_sweep` must keep."""
        rows = await self._db.fetch_all("SELECT DISTINCT path FROM images")
        return {row["path"] for row in rows}


def _check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed} is outside 0..2**53-1 and would not round-trip exactly")


def _generation(row: sqlite3.Row, images: tuple[Image, ...]) -> Generation:
    return Generation(
        id=row["id"],
        job_id=row["job_id"],
        user_id=row["user_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        message_id=row["message_id"],
        operation=Mode(row["operation"]),
        parent_image_id=row["parent_image_id"],
        request=GenerationRequest.from_json(row["request_json"]),
        created_at=row["created_at"],
        deleted_at=row["deleted_at"],
        images=images,
        channel_nsfw=bool(row["channel_nsfw"]),
    )
