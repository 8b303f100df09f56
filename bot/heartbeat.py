"""The heartbeat file: the running bot's worker health, for `dreamcord doctor --quick`.

The doctor is its own process (the container's health check), so the bot writes the worker's
health to DATA_DIR every few seconds from its event loop. A fresh file says the bot and its
loop run; what it holds says whether the worker is alive and making progress. A file is
simpler than asking the metrics port, which is off unless configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.health import WorkerHealth

log = logging.getLogger(__name__)

HEARTBEAT_FILE = "heartbeat.json"
INTERVAL_S = 15.0
STALE_AFTER_S = 90.0
"""Six missed beats: the bot is gone, or its event loop is blocked."""


def heartbeat_path(data_dir: Path) -> Path:
    return data_dir / HEARTBEAT_FILE


def write_heartbeat(path: Path, health: WorkerHealth, now: float) -> None:
    """Replace the file in one step, so a reader never sees half of it."""
    text = json.dumps({"written_at": now, "worker": dataclasses.asdict(health)})
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".heartbeat-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_heartbeat(path: Path) -> tuple[float, WorkerHealth] | None:
    """When it was written and the health it holds; None when there is no file.

    Raises ValueError for a file that is not a heartbeat.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return float(data["written_at"]), WorkerHealth(**data["worker"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a heartbeat file ({error})") from None


def remove_heartbeat(path: Path) -> None:
    """A stopped bot leaves no heartbeat, so the doctor does not judge a stale one."""
    path.unlink(missing_ok=True)


class Heartbeat:
    """Writes `health()` to `path` every `interval_s` while started."""

    def __init__(
        self, path: Path, health: Callable[[], WorkerHealth], interval_s: float = INTERVAL_S
    ) -> None:
        self.path = path
        self._health = health
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        remove_heartbeat(self.path)

    async def _beat(self) -> None:
        while True:
            try:
                await asyncio.to_thread(write_heartbeat, self.path, self._health(), time.time())
            except OSError as error:  # a full disk must not stop the bot; doctor sees it stale
                log.warning("could not write the heartbeat %s: %s", self.path, error)
            await asyncio.sleep(self._interval_s)
