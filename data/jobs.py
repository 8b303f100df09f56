"""Persisted jobs and the state machine they follow, so a restart loses and repeats nothing."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

import aiosqlite

from data.clock import utc_now
from data.db import Database
from pipeline.queue import JobState
from pipeline.request import GenerationRequest

# One set of job states: the queue's, stored here as their values (and re-exported).
__all__ = ["FINISHED", "InvalidTransition", "Job", "JobRepository", "JobState", "transition"]


FINISHED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})

# Which states each state may move to. running -> queued is a retry after a crash or an
# interrupted batch; nothing leaves a finished state.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}
    ),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


_JOB_PICTURES = (
    "SELECT json_extract(request_json, '$.init_image') AS path, state FROM jobs"
    " UNION ALL SELECT json_extract(request_json, '$.mask_image'), state FROM jobs"
    " UNION ALL SELECT json_extract(unit.value, '$.image'), state"
    " FROM jobs, json_each(jobs.request_json, '$.controls') AS unit"
    " UNION ALL SELECT json_extract(one.value, '$.image'), state"
    " FROM jobs, json_each(jobs.request_json, '$.image_prompts') AS one"
)
"""Every stored picture path a job's request names, with the job's state, one row each
(`GenerationRequest.pictures` lists the same fields)."""


class InvalidTransition(Exception):
    """A job was asked to move to a state its current state does not allow.

    Expected in races (Cancel clicked just as the job finished): callers catch it and tell the
    user what happened instead.
    """

    def __init__(self, job_id: str, current: JobState | None, target: str) -> None:
        self.job_id, self.current, self.target = job_id, current, target
        where = "does not exist" if current is None else f"is {current}"
        super().__init__(f"job {job_id} {where}, so it cannot become {target}")


@dataclass(frozen=True)
class Job:
    id: str
    state: JobState
    user_id: int
    guild_id: int | None
    channel_id: int | None
    interaction_id: int | None
    interaction_token: str | None
    message_id: int | None
    request: GenerationRequest
    priority: int
    attempts: int
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    delivered_at: str | None
    delivery_attempts: int
    delivery_failed_at: str | None
    channel_nsfw: bool = True
    """Whether it was asked in an NSFW channel (unknown for old rows: True, the safe side)."""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        values = dict(row)
        values["state"] = JobState(values["state"])
        values["channel_nsfw"] = bool(values.get("channel_nsfw", 1))
        values["request"] = GenerationRequest.from_json(values.pop("request_json"))
        return cls(**values)


async def transition(
    conn: aiosqlite.Connection, job_id: str, target: JobState, **columns: Any
) -> None:
    """Move a job to `target` inside the caller's transaction, setting `columns` too.

    Shared with GenerationRepository, which must finish the job in the same transaction that
    stores its images: otherwise a crash between the two would retry a job already stored.
    """
    async with conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)) as cursor:
        row = await cursor.fetchone()
    current = JobState(row[0]) if row else None
    if current is None or target not in TRANSITIONS[current]:
        raise InvalidTransition(job_id, current, target)
    assignments = ", ".join(f"{name} = :{name}" for name in ("state", *columns))
    await conn.execute(
        f"UPDATE jobs SET {assignments} WHERE id = :id",
        {"state": target.value, **columns, "id": job_id},
    )


class JobRepository:
    """Jobs from submission to delivery. Every state change checks `TRANSITIONS`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        request: GenerationRequest,
        *,
        user_id: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
        interaction_id: int | None = None,
        interaction_token: str | None = None,
        message_id: int | None = None,
        priority: int = 0,
        channel_nsfw: bool = False,
    ) -> Job:
        job_id = uuid.uuid4().hex
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO jobs (id, user_id, guild_id, channel_id, interaction_id,"
                " interaction_token, message_id, request_json, priority, created_at,"
                " channel_nsfw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    user_id,
                    guild_id,
                    channel_id,
                    interaction_id,
                    interaction_token,
                    message_id,
                    request.to_json(),
                    priority,
                    utc_now(),
                    int(channel_nsfw),
                ),
            )
            return await _load(conn, job_id)

    async def uses_init_image(self, path: str) -> bool:
        """Whether any job reads the picture at `path` (as its request stores it): as its init
        image, its mask, a ControlNet unit's map or an image prompt."""
        row = await self._db.fetch_one(
            f"SELECT 1 FROM ({_JOB_PICTURES}) WHERE path = ? LIMIT 1", (path,)
        )
        return row is not None

    async def init_images(self) -> set[str]:
        """The pictures jobs read (init images, masks, control maps, image prompts), for the
        sweep of the uploads folder."""
        rows = await self._db.fetch_all(
            f"SELECT DISTINCT path FROM ({_JOB_PICTURES}) WHERE path IS NOT NULL"
        )
        return {row["path"] for row in rows}

    async def active_pictures(self) -> set[str]:
        """The pictures queued and running jobs read: all the bot serves remote workers."""
        rows = await self._db.fetch_all(
            f"SELECT DISTINCT path FROM ({_JOB_PICTURES})"
            " WHERE path IS NOT NULL AND state IN (?, ?)",
            (JobState.QUEUED.value, JobState.RUNNING.value),
        )
        return {row["path"] for row in rows}

    async def get(self, job_id: str) -> Job | None:
        row = await self._db.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(row) if row else None

    async def list_queued(self) -> list[Job]:
        """Queued jobs oldest first, to refill the queue at start-up."""
        return await self.jobs_in_state(JobState.QUEUED)

    async def jobs_in_state(self, state: JobState) -> list[Job]:
        # rowid breaks ties between jobs created within the same microsecond.
        rows = await self._db.fetch_all(
            "SELECT * FROM jobs WHERE state = ? ORDER BY created_at, rowid", (state.value,)
        )
        return [Job.from_row(row) for row in rows]

    async def undelivered(self) -> list[Job]:
        """Finished jobs whose result or error was never posted nor given up on, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM jobs WHERE delivered_at IS NULL AND delivery_failed_at IS NULL"
            " AND state IN ('done', 'failed', 'cancelled') ORDER BY finished_at"
        )
        return [Job.from_row(row) for row in rows]

    async def set_message(self, job_id: str, message_id: int) -> None:
        """Remember the status message, so progress and the result can edit it later."""
        async with self._db.transaction() as conn:
            await conn.execute("UPDATE jobs SET message_id = ? WHERE id = ?", (message_id, job_id))

    async def mark_running(self, job_id: str) -> Job:
        async with self._db.transaction() as conn:
            await transition(conn, job_id, JobState.RUNNING, started_at=utc_now())
            await conn.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?", (job_id,))
            return await _load(conn, job_id)

    async def mark_done(self, job_id: str) -> Job:
        return await self._finish(job_id, JobState.DONE, None)

    async def mark_failed(self, job_id: str, error: str) -> Job:
        return await self._finish(job_id, JobState.FAILED, error)

    async def mark_cancelled(self, job_id: str) -> Job:
        return await self._finish(job_id, JobState.CANCELLED, None)

    async def requeue(self, job_id: str) -> Job:
        """Send a running job back to the queue (retry); `attempts` keeps counting."""
        async with self._db.transaction() as conn:
            await transition(conn, job_id, JobState.QUEUED, started_at=None)
            return await _load(conn, job_id)

    async def mark_delivered(self, job_id: str) -> bool:
        """Record that the outcome was posted; False if it already was, so post nothing.

        The interaction token is dropped here: it is a credential and no longer needed.
        """
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE jobs SET delivered_at = ?, interaction_token = NULL"
                " WHERE id = ? AND delivered_at IS NULL"
                " AND state IN ('done', 'failed', 'cancelled')",
                (utc_now(), job_id),
            )
            if cursor.rowcount == 1:
                return True
            job = await _load_optional(conn, job_id)
            if job is None or job.state not in FINISHED:
                raise InvalidTransition(job_id, job.state if job else None, "delivered")
            return False

    async def count_delivery_attempt(self, job_id: str) -> int:
        """Count one more try at posting a finished job's outcome; the count, this one included.

        Counted before the post, so a crash in the middle of one still counts.
        """
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE jobs SET delivery_attempts = delivery_attempts + 1"
                " WHERE id = ? AND state IN ('done', 'failed', 'cancelled')",
                (job_id,),
            )
            job = await _load_optional(conn, job_id)
            if cursor.rowcount != 1 or job is None:
                raise InvalidTransition(job_id, job.state if job else None, "delivered")
            return job.delivery_attempts

    async def mark_delivery_failed(self, job_id: str) -> None:
        """Give up posting the outcome: no start tries again. The interaction token goes too."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET delivery_failed_at = ?, interaction_token = NULL"
                " WHERE id = ? AND delivered_at IS NULL",
                (utc_now(), job_id),
            )

    async def _finish(self, job_id: str, state: JobState, error: str | None) -> Job:
        async with self._db.transaction() as conn:
            await transition(conn, job_id, state, finished_at=utc_now(), error=error)
            return await _load(conn, job_id)


async def _load_optional(conn: aiosqlite.Connection, job_id: str) -> Job | None:
    async with conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cursor:
        row = await cursor.fetchone()
    return Job.from_row(row) if row else None


async def _load(conn: aiosqlite.Connection, job_id: str) -> Job:
    job = await _load_optional(conn, job_id)
    assert job is not None, "loaded inside the transaction that wrote it"
    return job
