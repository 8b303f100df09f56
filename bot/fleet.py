"""The remote workers as /status, the metrics and the logs show them: plain rows, no Redis.

Taken from the registry's latest heartbeats (`pipeline.remote.registry.RemoteWorkers`); empty
when images are made in this process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.remote.messages import Heartbeat


@dataclass(frozen=True)
class WorkerRow:
    """One live worker: name, GPU (or device), state, measured speed, heartbeat age."""

    name: str
    gpu: str
    state: str
    images_per_s: float
    heartbeat_age_s: float

    def describe(self) -> str:
        return (
            f"{self.name}: {self.gpu}, {self.state}, {self.images_per_s:.2f} images/s, "
            f"heartbeat {self.heartbeat_age_s:.0f} s ago"
        )


def worker_rows(beats: Iterable[Heartbeat], now: float) -> tuple[WorkerRow, ...]:
    """The rows of these heartbeats, by name; `now` is the wall clock heartbeats are sent in."""
    return tuple(
        WorkerRow(
            name=beat.name,
            gpu=beat.cuda_device or beat.device,
            state=beat.state,
            images_per_s=beat.images_per_s,
            heartbeat_age_s=max(0.0, now - beat.time),
        )
        for beat in sorted(beats, key=lambda beat: beat.name)
    )
