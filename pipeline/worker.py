"""The GPU worker: one dedicated thread runs every backend call; the event loop only plans.

The loop side asks the queue for the next batch when idle, hands it to the model thread and
awaits it without blocking. Progress comes back with `call_soon_threadsafe`; finished jobs go
to the service through `WorkerHooks`.

Faults stay small: out of memory halves a batch; any other error re-runs a shared batch job
by job, so an error fails only its own job; a bug in the loop itself restarts the loop (the
batch it held runs once more, then fails), and `health()` tells whether the loop is alive and
whether its batch still makes progress.

Background work (training, pipeline.background) takes one step at a time, only when the queue
has no batch to start: an image job submitted during training runs before training's next step.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pipeline.backend import (
    Backend,
    BatchInterrupted,
    ImageResult,
    ImageTask,
    OutOfDeviceMemory,
)
from pipeline.background import BackgroundQueue, BackgroundState, BackgroundTicket
from pipeline.errors import UserError
from pipeline.health import WorkerHealth
from pipeline.memory import Capacity
from pipeline.queue import Job, JobQueue, JobState

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

T = TypeVar("T")

TOO_LARGE = (
    "this image does not fit in the GPU's memory: try a smaller size, a lower hires scale, "
    "or no highres fix"
)
FAILED = "generation failed because of an internal error; it has been logged"
CRASHED = (
    "generation failed twice because of an internal error in the bot; it has been logged. "
    "Try again later, and tell an admin if it keeps failing"
)
MAX_RESTART_BACKOFF_S = 60.0


@dataclass(frozen=True)
class Progress:
    """A job's step in the running batch, with a latent preview when one was asked for."""

    job_id: str
    step: int
    total: int
    preview: Image.Image | None = None


class WorkerHooks:
    """What the service plugs in; every method runs on the event loop. Override what you need.

    The async hooks run as their own tasks, so slow delivery never holds up the next batch.
    """

    def on_job_started(self, job: Job) -> None:
        """The job's first images went to the model."""

    def on_progress(self, progress: Progress) -> None:
        """Called for every step of every job in the running batch; coalesce edits yourself."""

    async def on_job_done(self, job: Job, results: list[ImageResult]) -> None:
        """All images of the job are made, in image order."""

    async def on_job_failed(self, job: Job, message: str) -> None:
        """The job is off the queue; `message` is fit to show its user."""

    def on_out_of_memory(self, batch_size: int) -> None:
        """A batch of `batch_size` ran out of device memory; it is split and retried."""


class BackendInfo(Protocol):
    """What the service's status reads of the backend."""

    @property
    def device(self) -> str | None: ...

    @property
    def default_model(self) -> str | None: ...


class Workers(Protocol):
    """What the job service runs jobs through: one `Worker`, or a registry of remote ones
    (pipeline/remote/registry.py)."""

    @property
    def backend(self) -> BackendInfo: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> WorkerHealth: ...

    def want_previews(self, job_id: str, wanted: bool = True) -> None: ...


class Worker:
    """Runs batches from `queue` on `backend`, one at a time, on one dedicated thread."""

    def __init__(
        self,
        queue: JobQueue,
        backend: Backend,
        capacity: Capacity,
        hooks: WorkerHooks,
        *,
        max_batch: int = 8,
        preview_interval_s: float = 2.0,
        stop_timeout_s: float = 30.0,
        restart_backoff_s: float = 1.0,
        max_restarts: int = 5,
        stuck_after_s: float = 600.0,
        clock: Callable[[], float] = time.time,
        wait_turn: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._queue = queue
        self._wait_turn = wait_turn or queue.wait_for_work
        """Returns when this loop may take a batch: when work is waiting (several remote
        loops on one queue also wait for the one best placed to run it)."""
        self._backend = backend
        self._capacity = capacity
        self._hooks = hooks
        self._max_batch = max_batch
        self._preview_interval_s = preview_interval_s
        self._stop_timeout_s = stop_timeout_s
        self._restart_backoff_s = restart_backoff_s
        self._max_restarts = max_restarts
        self._stuck_after_s = stuck_after_s
        self._clock = clock
        # One thread for all model work: CUDA state and the model stay on it.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dreamcord-model")
        self._serving: asyncio.Task[None] | None = None
        self._in_batch = False
        self._stopping = False
        self._preview_wanted: set[str] = set()
        self._last_preview: dict[str, float] = {}  # touched on the model thread only
        self._hook_tasks: set[asyncio.Task[None]] = set()
        self._held: Sequence[ImageTask] = ()
        """The batch the loop has taken and not settled: what a crash of the loop leaves."""
        self._crashed_once: set[str] = set()
        self._crashes_in_a_row = 0
        self._restarts = 0
        self._last_error: str | None = None
        self._busy_since: float | None = None
        self._last_step_at: float | None = None  # written on the model thread
        self.background = BackgroundQueue()
        """Low-priority work (training): add, pause, resume, cancel; run between batches."""

    @property
    def backend(self) -> Backend:
        """What runs the batches (for status pages; call it only through `call`)."""
        return self._backend

    def start(self) -> None:
        """Start serving the queue; call from the running event loop."""
        self._serving = asyncio.get_running_loop().create_task(self._serve(), name="worker")
        self._serving.add_done_callback(self._serving_ended)

    async def stop(self) -> None:
        """Stop taking batches, interrupt the running one, and join the model thread.

        Waits at most `stop_timeout_s` for the backend to reach a step boundary; the running
        batch's images go back to the queue, so a restart runs them again.
        """
        self._stopping = True
        if self._serving is not None:
            if not self._in_batch:
                self._serving.cancel()
            done, _ = await asyncio.wait({self._serving}, timeout=self._stop_timeout_s)
            if not done:
                log.warning("the model thread did not stop within %ss", self._stop_timeout_s)
        if self._hook_tasks:
            await asyncio.gather(*self._hook_tasks, return_exceptions=True)
        joined = self._serving is None or self._serving.done()
        if joined:
            await self._close_background()
        # A thread stuck inside the backend cannot be killed; do not hang shutdown on it.
        await asyncio.to_thread(self._thread.shutdown, wait=joined)

    def health(self) -> WorkerHealth:
        """Whether the loop runs, and since when its batch made no progress."""
        return WorkerHealth(
            alive=self._serving is not None and not self._serving.done(),
            busy_since=self._busy_since,
            last_step_at=self._last_step_at,
            restarts=self._restarts,
            last_error=self._last_error,
            stuck_after_s=self._stuck_after_s,
            training=self.background.runnable() is not None,
        )

    def want_previews(self, job_id: str, wanted: bool = True) -> None:
        """Ask for (or stop asking for) latent previews of a job in its progress events."""
        if wanted:
            self._preview_wanted.add(job_id)
        else:
            self._preview_wanted.discard(job_id)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the model thread between batches (load a model, calibrate memory)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def _serve(self) -> None:
        """Serve batches; a bug restarts the loop, after a growing pause when it repeats.

        After `max_restarts` crashes in a row the loop gives up: `health()` then says the
        worker is dead, and the service refuses new jobs instead of queueing them forever.
        """
        while not self._stopping:
            try:
                await self._serve_one_batch()
            except Exception as error:
                log.exception("the worker loop failed on a bug; restarting it")
                self._last_error = f"{type(error).__name__}: {error}"
                crashed = True
            else:
                crashed = False
            # Settled outside the handler, whose error keeps the failed batch's frames alive.
            if not crashed:
                self._crashes_in_a_row = 0
                continue
            self._settle_held_batch()
            self._crashes_in_a_row += 1
            if self._crashes_in_a_row >= self._max_restarts:
                log.error("the worker loop failed %d times in a row; it stops", self._max_restarts)
                return
            self._restarts += 1
            await asyncio.sleep(self._restart_pause_s())

    def _restart_pause_s(self) -> float:
        """No pause after one crash (a one-off bug should not hold everyone up), then doubling."""
        if self._crashes_in_a_row < 2:
            return 0.0
        pause = self._restart_backoff_s * 2 ** (self._crashes_in_a_row - 2)
        return float(min(MAX_RESTART_BACKOFF_S, pause))

    async def _serve_one_batch(self) -> None:
        await self._wait_for_work()
        if not self._queue.has_work():
            await self._serve_background()
            return
        queued = {job.job_id for job in self._queue.unfinished() if job.state is JobState.QUEUED}
        tasks = self._queue.take_batch(self._capacity.max_batch, self._max_batch)
        self._held = tasks
        self._busy_since, self._last_step_at = self._clock(), None
        jobs = self._jobs_of(tasks)
        self._in_batch = True
        try:
            for job in jobs:
                if job.job_id in queued:
                    self._hooks.on_job_started(job)
            await self._run(tasks)
        finally:
            self._in_batch = False
            self._busy_since = None
            for job in jobs:
                if not job.active:
                    self._preview_wanted.discard(job.job_id)
                    self._last_preview.pop(job.job_id, None)
                    self._crashed_once.discard(job.job_id)
        self._held = ()

    async def _wait_for_work(self) -> None:
        """Until this loop's turn to start a batch (`wait_turn`) or background work has a step."""
        while not self.background.needs_the_thread():
            turn = asyncio.ensure_future(self._wait_turn())
            changed = asyncio.ensure_future(self.background.changed())
            try:
                done, _ = await asyncio.wait({turn, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                turn.cancel()
                changed.cancel()
            if turn in done:
                return

    async def _serve_background(self) -> None:
        """Carry out cancels, then one step of the background work whose turn it is."""
        for cancelled in self.background.cancelled():
            await self._end_background(cancelled, BackgroundState.CANCELLED)
        ticket = self.background.runnable()
        if ticket is None:
            return
        self._in_batch = True
        try:
            result = await self.call(lambda: self._background_step(ticket))
        except Exception as error:
            log.exception("background work %s failed", ticket.key)
            ticket.error = error
            await self._end_background(ticket, BackgroundState.FAILED)
            return
        finally:
            self._in_batch = False
            self._capacity.reserved_bytes = self.background.reserved_bytes
        ticket.on_step(result)
        if ticket.work is not None and ticket.work.finished:
            await self._end_background(ticket, BackgroundState.DONE)

    def _background_step(self, ticket: BackgroundTicket) -> object:
        """On the model thread: build the work on its first turn, then take one step."""
        if ticket.work is None:
            ticket.work = ticket.start()
            ticket.state = BackgroundState.RUNNING
        try:
            return ticket.work.step()
        finally:
            ticket.reserved_bytes = ticket.work.reserved_bytes

    async def _end_background(self, ticket: BackgroundTicket, state: BackgroundState) -> None:
        work = ticket.work
        if work is not None:
            try:
                await self.call(work.close)
            except Exception:
                log.exception("closing background work %s failed", ticket.key)
        self.background.end(ticket, state)
        self._capacity.reserved_bytes = self.background.reserved_bytes

    async def _close_background(self) -> None:
        """At stop: free what built works hold; they stay unfinished (a restart resumes)."""
        for ticket in self.background.tickets():
            if ticket.work is not None:
                work, ticket.work = ticket.work, None
                try:
                    await self.call(work.close)
                except Exception:
                    log.exception("closing background work %s failed", ticket.key)
        self._capacity.reserved_bytes = 0

    def _settle_held_batch(self) -> None:
        """Put a crashed batch back once; a job caught in a second crash fails with a message."""
        held, self._held = self._held, ()
        again = []
        for job_id in dict.fromkeys(task.job_id for task in held):
            if not self._is_active(job_id):
                continue
            if job_id in self._crashed_once:
                self._crashed_once.discard(job_id)
                self._fail(job_id, CRASHED)
            else:
                self._crashed_once.add(job_id)
                again.append(job_id)
        self._queue.requeue([task for task in held if task.job_id in again])

    async def _run(self, tasks: Sequence[ImageTask]) -> None:
        """Run one batch. Out of memory halves it; any other error re-runs it job by job, so
        an error fails only the job it belongs to; a job alone fails with it."""
        jobs = self._jobs_of(tasks)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        out_of_memory = False
        message = FAILED
        # The retries run after the handlers, not in them: a handled error's traceback keeps
        # the failed attempt's frames, and with them its tensors, alive.
        try:
            results = await loop.run_in_executor(
                self._thread, self._run_on_thread, tasks, jobs, loop
            )
        except BatchInterrupted:
            self._queue.requeue(tasks)
            return
        except OutOfDeviceMemory:
            out_of_memory = True
        except UserError as error:
            message = str(error)
        except Exception:
            log.exception("batch failed for jobs %s", [job.job_id for job in jobs])
        else:
            if sorted((r.task.job_id, r.task.index) for r in results) == sorted(
                (t.job_id, t.index) for t in tasks
            ):
                for job in self._queue.complete(tasks, results, time.perf_counter() - started):
                    self._spawn(self._hooks.on_job_done(job, job.ordered_results()))
                return
            log.error("backend returned results for other tasks than asked: %s", tasks)
        if out_of_memory:
            await self._split_after_out_of_memory(tasks)
        elif len(jobs) > 1:
            log.info("re-running the failed batch job by job: %s", [job.job_id for job in jobs])
            await self._run_parts([[t for t in tasks if t.job_id == job.job_id] for job in jobs])
        else:
            for job in jobs:
                self._fail(job.job_id, message)

    async def _split_after_out_of_memory(self, tasks: Sequence[ImageTask]) -> None:
        if len(tasks) == 1:
            log.warning("job %s: one image ran out of device memory", tasks[0].job_id)
            self._fail(tasks[0].job_id, TOO_LARGE)
            return
        self._capacity.record_out_of_memory(tasks[0].request, len(tasks))
        self._hooks.on_out_of_memory(len(tasks))
        await self.call(self._free_memory)
        middle = (len(tasks) + 1) // 2
        await self._run_parts([tasks[:middle], tasks[middle:]])

    async def _run_parts(self, parts: Sequence[Sequence[ImageTask]]) -> None:
        """Run parts of a failed batch one after another, skipping jobs no longer active."""
        for part in parts:
            live = [task for task in part if self._is_active(task.job_id)]
            if self._stopping:
                self._queue.requeue(live)
            elif live:
                await self._run(live)

    def _free_memory(self) -> None:
        """On the model thread: collect the failed attempt (its frames sit in reference
        cycles with the futures that carried the error), then return the device's cache."""
        gc.collect()
        self._backend.free_memory()

    def _run_on_thread(
        self,
        tasks: Sequence[ImageTask],
        jobs: Sequence[Job],
        loop: asyncio.AbstractEventLoop,
    ) -> list[ImageResult]:
        """The backend call, on the model thread."""
        job_ids = list(dict.fromkeys(task.job_id for task in tasks))
        first_image = {job_id: [t.job_id for t in tasks].index(job_id) for job_id in job_ids}

        def should_stop() -> bool:
            # Mixed batches go on when one job is cancelled; its images are dropped later.
            return self._stopping or all(job.state is JobState.CANCELLED for job in jobs)

        def on_step(step: int, total: int, previews: Callable[[], list[Image.Image]]) -> None:
            self._last_step_at = self._clock()
            now = time.monotonic()
            due = [
                job_id
                for job_id in job_ids
                if job_id in self._preview_wanted
                and now - self._last_preview.get(job_id, -float("inf")) >= self._preview_interval_s
            ]
            images = previews() if due else []
            for job_id in job_ids:
                preview = images[first_image[job_id]] if job_id in due else None
                if preview is not None:
                    self._last_preview[job_id] = now
                loop.call_soon_threadsafe(
                    self._hooks.on_progress, Progress(job_id, step, total, preview)
                )

        return self._backend.run(tasks, on_step, should_stop)

    def _jobs_of(self, tasks: Sequence[ImageTask]) -> list[Job]:
        jobs = (self._queue.get(job_id) for job_id in dict.fromkeys(t.job_id for t in tasks))
        return [job for job in jobs if job is not None]

    def _is_active(self, job_id: str) -> bool:
        job = self._queue.get(job_id)
        return job is not None and job.active

    def _fail(self, job_id: str, message: str) -> None:
        job = self._queue.fail(job_id)
        if job is not None:
            self._spawn(self._hooks.on_job_failed(job, message))

    def _spawn(self, hook: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(hook)
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_finished)

    def _serving_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            self._last_error = f"{type(error).__name__}: {error}"
            log.error("the worker stopped on a bug", exc_info=error)

    def _hook_finished(self, task: asyncio.Task[None]) -> None:
        self._hook_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a worker hook failed", exc_info=task.exception())
