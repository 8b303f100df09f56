"""The connection: pragmas, the single write path, and refusals at start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
import pytest

from data.db import Database
from data.location import check_database_path
from data.schema import latest_version
from pipeline.errors import UserError


async def test_open_sets_wal_foreign_keys_and_busy_timeout(db: Database) -> None:
    assert (await db.fetch_one("PRAGMA journal_mode"))[0] == "wal"
    assert (await db.fetch_one("PRAGMA foreign_keys"))[0] == 1
    assert (await db.fetch_one("PRAGMA busy_timeout"))[0] > 0


async def test_open_creates_missing_data_dir(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "dreamcord.db"
    database = await Database.open(path)
    await database.close()
    assert path.is_file()


async def test_transaction_rolls_back_everything_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO audit_log (action, created_at) VALUES ('a', '2024')")
            raise RuntimeError("boom")
    assert (await db.fetch_one("SELECT count(*) FROM audit_log"))[0] == 0


async def test_a_cancelled_transaction_rolls_back_and_frees_the_lock(db: Database) -> None:
    inside = asyncio.Event()

    async def slow_writer() -> None:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO audit_log (action, created_at) VALUES ('a', '2024')")
            inside.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(slow_writer())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5), db.transaction() as conn:
        await conn.execute("INSERT INTO audit_log (action, created_at) VALUES ('b', '2024')")
    rows = await db.fetch_all("SELECT action FROM audit_log")
    assert [row["action"] for row in rows] == ["b"]


async def test_transactions_never_interleave(db: Database) -> None:
    """Each transaction reads a counter then writes it back; interleaving would lose updates."""
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO user_settings VALUES (1, 'n', '0', '2024')")

    async def increment() -> None:
        async with db.transaction() as conn:
            async with conn.execute("SELECT value FROM user_settings WHERE key = 'n'") as cur:
                value = int((await cur.fetchone())[0])
            await asyncio.sleep(0)  # give every other coroutine the chance to run
            await conn.execute("UPDATE user_settings SET value = ? WHERE key = 'n'", (value + 1,))

    await asyncio.gather(*(increment() for _ in range(40)))
    assert (await db.fetch_one("SELECT value FROM user_settings WHERE key = 'n'"))[0] == "40"


async def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(aiosqlite.IntegrityError):
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO favourites (user_id, image_id, created_at) VALUES (1, 999, 'x')"
            )


@pytest.mark.parametrize("name", ["dreamcord.txt", "dreamcord", "dreamcord.db.bak"])
async def test_refuses_file_names_without_db_suffix(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match=r"must end in \.db or \.sqlite3"):
        await Database.open(tmp_path / name)
    assert not (tmp_path / name).exists()


async def test_accepts_sqlite3_suffix(tmp_path: Path) -> None:
    database = await Database.open(tmp_path / "bot.sqlite3")
    await database.close()


async def test_refuses_a_directory_as_the_database(tmp_path: Path) -> None:
    (tmp_path / "store.db").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        await Database.open(tmp_path / "store.db")


async def test_refuses_a_directory_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match=r"cannot write in the database directory.*DATA_DIR"):
        await Database.open(tmp_path / "file" / "dreamcord.db")


async def test_refuses_a_directory_no_one_can_write() -> None:
    """/proc takes no new files, not even from root: a real unwritable directory on Linux."""
    with pytest.raises(UserError, match="cannot write in the database directory"):
        await Database.open(Path("/proc/self/dreamcord.db"))


async def test_unwritable_directory_message_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stands in for a read-only mount, which root cannot simulate with chmod."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("data.location.tempfile.TemporaryFile", refuse)
    with pytest.raises(UserError) as caught:
        await Database.open(tmp_path / "dreamcord.db")
    assert "Permission denied" in str(caught.value)
    assert "write access" in str(caught.value)


def test_refuses_a_network_filesystem(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        f"/dev/vda / ext4 rw 0 0\nserver:/export {tmp_path / 'nfs'} nfs4 rw,relatime 0 0\n"
    )
    with pytest.raises(UserError, match=r"network filesystem \(nfs4\).*local disk"):
        check_database_path(tmp_path / "nfs" / "dreamcord.db", mounts)
    check_database_path(tmp_path / "local" / "dreamcord.db", mounts)


async def test_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "dreamcord.db"
    path.write_bytes(b"this is not a database, just some text padding " * 100)
    with pytest.raises(UserError, match="not a usable SQLite database"):
        await Database.open(path)


async def test_refuses_a_schema_newer_than_the_code(tmp_path: Path) -> None:
    path = tmp_path / "dreamcord.db"
    database = await Database.open(path)
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO schema_migrations VALUES (?, 'future', '2099')", (latest_version() + 1,)
        )
    await database.close()
    with pytest.raises(UserError, match="newer than this Dreamcord knows"):
        await Database.open(path)
