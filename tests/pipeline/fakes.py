"""Test doubles: a fake Backend and hooks that record what the worker reports, and a dict-backed
`FileSource` for the engine's libraries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from PIL import Image

from pipeline.backend import (
    BatchInterrupted,
    ImageResult,
    ImageTask,
    OutOfDeviceMemory,
    StepCallback,
)
from pipeline.errors import UserError
from pipeline.hashes import file_sha256
from pipeline.queue import Job
from pipeline.worker import Progress, WorkerHooks


class FakeBackend:
    """Implements Backend: sleeps `step_s` per step and honours `should_stop` between steps.

    `oom_above`: batches larger than this raise OutOfDeviceMemory. `oom_if`: a predicate on the
    tasks that does the same (for "one image is too large"). Clear `release` to hold a batch
    at its first step (`holding` is set once it waits there), so tests can act while it runs.
    `batches` records every batch tried, failed ones included.
    """

    def __init__(
        self,
        step_s: float = 0.001,
        oom_above: int | None = None,
        oom_if: Callable[[Sequence[ImageTask]], bool] | None = None,
        error: Exception | None = None,
    ) -> None:
        self.step_s = step_s
        self.oom_above = oom_above
        self.oom_if = oom_if
        self.error = error
        self.batches: list[list[ImageTask]] = []
        self.release = threading.Event()
        self.release.set()
        self.holding = threading.Event()
        self.threads: set[str] = set()
        self.memory_freed = 0

    device = None
    default_model = None
    measure_peak = None

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]

    def run(
        self,
        tasks: Sequence[ImageTask],
        on_step: StepCallback,
        should_stop: Callable[[], bool],
    ) -> list[ImageResult]:
        self.batches.append(list(tasks))
        self.threads.add(threading.current_thread().name)
        if self.error is not None:
            raise self.error
        too_many = self.oom_above is not None and len(tasks) > self.oom_above
        if too_many or (self.oom_if is not None and self.oom_if(tasks)):
            raise OutOfDeviceMemory(f"fake: {len(tasks)} images do not fit")
        total = tasks[0].request.steps
        for step in range(1, total + 1):
            while not self.release.is_set():
                self.holding.set()
                if should_stop():
                    raise BatchInterrupted
                time.sleep(0.001)
            if should_stop():
                raise BatchInterrupted
            time.sleep(self.step_s)
            on_step(step, total, lambda: [Image.new("RGB", (8, 8)) for _ in tasks])
        return [ImageResult(task, Image.new("RGB", (8, 8)), f"Seed: {task.seed}") for task in tasks]

    def free_memory(self) -> None:
        self.memory_freed += 1


class RecordingHooks(WorkerHooks):
    """WorkerHooks that keep everything they are told, for assertions."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.progress: list[Progress] = []
        self.done: dict[str, list[ImageResult]] = {}
        self.failed: dict[str, str] = {}
        self.done_twice: list[str] = []

    def on_job_started(self, job: Job) -> None:
        self.started.append(job.job_id)

    def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)

    async def on_job_done(self, job: Job, results: list[ImageResult]) -> None:
        if job.job_id in self.done:
            self.done_twice.append(job.job_id)
        self.done[job.job_id] = results

    async def on_job_failed(self, job: Job, message: str) -> None:
        self.failed[job.job_id] = message

    async def settled(self, count: int, timeout_s: float = 5.0) -> None:
        """Wait until `count` jobs are done or failed."""
        deadline = time.monotonic() + timeout_s
        while len(self.done) + len(self.failed) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.done)} done, {len(self.failed)} failed")
            await asyncio.sleep(0.005)


class DictFiles:
    """A `FileSource` over a dict of name -> path, every entry enabled; `kind` names it in the
    refusal of an unknown name, as the app's libraries do."""

    def __init__(self, paths: dict[str, Path], kind: str = "file") -> None:
        self.paths = paths
        self.kind = kind

    def names(self) -> Collection[str]:
        return list(self.paths)

    def resolve(self, name: str) -> tuple[Path, str]:
        if name not in self.paths:
            raise UserError(f"there is no {self.kind} named {name!r}")
        return self.paths[name], file_sha256(self.paths[name])
