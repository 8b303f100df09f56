"""The heartbeat file the bot writes for `dreamcord doctor --quick`, another process."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.heartbeat import Heartbeat, read_heartbeat
from pipeline.health import WorkerHealth

BUSY = WorkerHealth(True, 100.0, 160.0, 1, "RuntimeError: once", 600.0)


async def test_the_heartbeat_holds_the_workers_health_and_is_gone_after_stop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "heartbeat.json"
    heartbeat = Heartbeat(path, lambda: BUSY, interval_s=3600)
    heartbeat.start()
    for _ in range(500):
        if path.exists():
            break
        await asyncio.sleep(0.01)
    beat = read_heartbeat(path)
    await heartbeat.stop()
    assert beat is not None and beat[1] == BUSY
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240  (no temporary file left behind)


def test_no_file_is_no_heartbeat(tmp_path: Path) -> None:
    assert read_heartbeat(tmp_path / "heartbeat.json") is None
