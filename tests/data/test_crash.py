"""Crash safety: a process killed mid-transaction loses only what it had not committed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from data.db import Database

REPO_ROOT = Path(__file__).resolve().parents[2]

# Commits jobs one by one, printing each id only after COMMIT returned; then opens a long
# transaction of large rows, announces it, and keeps writing until killed.
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from data.db import Database
    from data.jobs import JobRepository
    from pipeline.request import GenerationRequest

    async def main(path, committed):
        db = await Database.open(path)
        jobs = JobRepository(db)
        for i in range(committed):
            job = await jobs.create(GenerationRequest(prompt=f"committed {i}"), user_id=1)
            print(job.id, flush=True)
        async with db.transaction() as conn:
            for i in range(1_000_000):
                await conn.execute(
                    "INSERT INTO audit_log (action, detail, created_at) VALUES (?, ?, ?)",
                    ("uncommitted", '{"pad": "' + "x" * 20000 + '"}', "2024"),
                )
                if i == 200:
                    print("IN_TRANSACTION", flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def run_writer_and_kill_it(path: Path, commits: int) -> list[str]:
    """Run WRITER until it is inside its long transaction, SIGKILL it, return committed ids."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(commits)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    committed = []
    try:
        for line in child.stdout:
            if line.strip() == "IN_TRANSACTION":
                break
            committed.append(line.strip())
        # Let it write a little more, so the kill lands mid-write with pages in the WAL.
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    # Megabytes of uncommitted pages had spilled into the WAL when the kill landed.
    assert Path(f"{path}-wal").stat().st_size > 1_000_000
    return committed


async def test_sigkill_during_a_long_transaction_keeps_every_committed_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dreamcord.db"
    committed = await asyncio.to_thread(run_writer_and_kill_it, path, 40)
    assert len(committed) == 40

    db = await Database.open(path)
    try:
        assert (await db.fetch_one("PRAGMA integrity_check"))[0] == "ok"
        rows = await db.fetch_all("SELECT id FROM jobs")
        assert sorted(row["id"] for row in rows) == sorted(committed)
        assert (await db.fetch_one("SELECT count(*) FROM audit_log"))[0] == 0
        assert await db.fetch_all("PRAGMA foreign_key_check") == []
    finally:
        await db.close()
