"""LoRA training runs: what was asked, where each stands, and where its status message is."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from data.clock import utc_now
from data.db import Database
from pipeline.errors import UserError


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


UNFINISHED = (RunState.QUEUED, RunState.RUNNING, RunState.PAUSED)
LOSSES_KEPT = 2_000
"""Loss points kept for the chart; older ones are thinned out (every other one dropped)."""


@dataclass(frozen=True)
class TrainingRun:
    id: int
    guild_id: int | None
    user_id: int
    name: str
    options: dict[str, Any]
    state: RunState
    step: int
    total: int
    last_loss: float | None
    losses: tuple[float, ...]
    work_dir: str
    error: str | None
    channel_id: int | None
    message_id: int | None
    created_at: str
    updated_at: str
    finished_at: str | None

    @property
    def unfinished(self) -> bool:
        return self.state in UNFINISHED

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TrainingRun:
        return cls(
            id=row["id"],
            guild_id=row["guild_id"],
            user_id=row["user_id"],
            name=row["name"],
            options=json.loads(row["options"]),
            state=RunState(row["state"]),
            step=row["step"],
            total=row["total"],
            last_loss=row["last_loss"],
            losses=tuple(json.loads(row["losses"])),
            work_dir=row["work_dir"],
            error=row["error"],
            channel_id=row["channel_id"],
            message_id=row["message_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
        )


class TrainingRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        guild_id: int | None,
        user_id: int,
        name: str,
        options: dict[str, Any],
        total: int,
        work_dir: str,
    ) -> TrainingRun:
        """A new queued run; a UserError when a run of that name is still unfinished."""
        now = utc_now()
        try:
            async with self._db.transaction() as conn:
                cursor = await conn.execute(
                    "INSERT INTO training_runs (guild_id, user_id, name, options, state, total,"
                    " work_dir, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        guild_id,
                        user_id,
                        name,
                        json.dumps(options),
                        RunState.QUEUED,
                        total,
                        work_dir,
                        now,
                        now,
                    ),
                )
                run_id = cursor.lastrowid
        except sqlite3.IntegrityError:
            raise UserError(
                f"a LoRA named {name!r} is already being trained: wait for it, or choose "
                "another name"
            ) from None
        assert run_id is not None
        run = await self.get(run_id)
        assert run is not None
        return run

    async def get(self, run_id: int) -> TrainingRun | None:
        row = await self._db.fetch_one("SELECT * FROM training_runs WHERE id = ?", (run_id,))
        return TrainingRun.from_row(row) if row else None

    async def unfinished(self, guild_id: int | None = None) -> list[TrainingRun]:
        """Queued, running and paused runs, oldest first; of one guild when given."""
        marks = ", ".join("?" for _ in UNFINISHED)
        sql = f"SELECT * FROM training_runs WHERE state IN ({marks})"
        params: list[Any] = list(UNFINISHED)
        if guild_id is not None:
            sql += " AND guild_id = ?"
            params.append(guild_id)
        rows = await self._db.fetch_all(sql + " ORDER BY id", params)
        return [TrainingRun.from_row(row) for row in rows]

    async def set_state(self, run_id: int, state: RunState, error: str | None = None) -> None:
        now = utc_now()
        finished = None if state in UNFINISHED else now
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE training_runs SET state = ?, error = ?, updated_at = ?,"
                " finished_at = ? WHERE id = ?",
                (state, error, now, finished, run_id),
            )

    async def record_step(self, run_id: int, step: int, loss: float) -> None:
        """The step reached and its loss, added to the chart's points."""
        run = await self.get(run_id)
        if run is None:
            return
        losses = [*run.losses, loss]
        if len(losses) > LOSSES_KEPT:
            losses = losses[::2]
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE training_runs SET step = ?, last_loss = ?, losses = ?, updated_at = ?"
                " WHERE id = ?",
                (step, loss, json.dumps(losses), utc_now(), run_id),
            )

    async def move(self, run_id: int, work_dir: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE training_runs SET work_dir = ? WHERE id = ?", (work_dir, run_id)
            )

    async def set_message(self, run_id: int, channel_id: int, message_id: int) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE training_runs SET channel_id = ?, message_id = ? WHERE id = ?",
                (channel_id, message_id, run_id),
            )
