"""The job service (`App.jobs`): what the Discord cogs and the CLI both call to run a job.

It owns the path of a job: checked against the limits and the server's policy, stored in SQLite
before it is acknowledged, put on the fair queue,
run by the worker, its images written to the image store and its rows to the database, then
handed to a `Delivery` (the Discord presenter, or the CLI) exactly once. On start it recovers
what a crash or restart left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bot.fleet import WorkerRow, worker_rows
from bot.metrics import Metrics
from bot.policy import Place, Policy
from data.disk import DiskFull
from data.generations import Generation, NewImage
from data.jobs import InvalidTransition
from data.jobs import Job as StoredJob
from data.jobs import JobState as StoredState
from data.repositories import Repositories
from pipeline.errors import UserError
from pipeline.limits import Limits, check_request
from pipeline.queue import CancelOutcome, Job, JobQueue, Priority
from pipeline.remote.registry import RemoteWorkers
from pipeline.request import GenerationRequest
from pipeline.worker import Progress, WorkerHooks, Workers

if TYPE_CHECKING:
    from PIL import Image

    from data.images import ImageStore
    from pipeline.backend import ImageResult

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2
"""A job interrupted by a crash runs once more; a second interruption fails it."""

RESTART_FAILURE = "this job was interrupted twice by a restart; please submit it again"
STORE_FAILED = "the images were made but could not be saved; it has been logged: try again"

MAX_DELIVERY_ATTEMPTS = 3
"""Tries at posting a job's outcome (one per start, at most) before it is given up on."""

WORKER_STOPPED = (
    "the image worker has stopped after repeated internal errors, so new jobs cannot run: "
    "an admin must restart the bot (the log says why). Try again after that"
)


def undeliverable(generation_id: int) -> str:
    """What the user hears once when their images could not be posted."""
    return (
        f"your images were made but could not be posted after {MAX_DELIVERY_ATTEMPTS} tries; "
        f"they are kept: post them with /show id:{generation_id}"
    )


@dataclass(frozen=True)
class Origin:
    """Who asked and where the answer goes: ids kept with the job for delivery after restarts."""

    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None
    interaction_id: int | None = None
    interaction_token: str | None = None
    channel_nsfw: bool = False
    """Whether the channel is NSFW: kept with the generation, so its images stay there."""


@dataclass(frozen=True)
class Ticket:
    """A job just queued: its id, place in the queue and estimated wait."""

    job_id: str
    position: int | None
    eta_s: float | None


@dataclass(frozen=True)
class QueuedJob:
    """One of a user's unfinished jobs, as `/queue` shows it."""

    job_id: str
    prompt: str
    running: bool
    position: int | None
    eta_s: float | None
    images: int


@dataclass(frozen=True)
class ServiceStatus:
    """What `/status` shows: plain data, so the cogs never touch torch."""

    model: str | None
    device: str | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    waiting: int
    running: int
    pixel_steps_per_s: float
    loras: int
    worker: str = "idle"
    """The worker's state in a line (idle, busy, or what is wrong and what to do)."""
    worker_ok: bool = True
    """False when the worker is dead or stuck: jobs submitted now would not run."""
    workers: tuple[WorkerRow, ...] = ()
    """The live remote workers (QUEUE_URL set); none when images are made in this process."""


class Delivery(Protocol):
    """Shows a job's progress and outcome to its user (Discord presenter, CLI)."""

    def progress(self, job: StoredJob, step: int, total: int, preview: Image.Image | None) -> None:
        """Called on the event loop for every step; must not block (coalesce, schedule)."""

    async def deliver(self, job: StoredJob, generation: Generation) -> None:
        """Post the result. Raise to leave it undelivered (it is retried at the next start)."""

    async def report_failure(self, job: StoredJob, message: str) -> None:
        """Tell the user the job failed or was cancelled; `message` is fit to show them."""


class JobService(WorkerHooks):
    """Submit, cancel, recover and deliver jobs; the worker's hooks land here."""

    def __init__(
        self,
        repos: Repositories,
        images: ImageStore,
        queue: JobQueue,
        worker_factory: Callable[[WorkerHooks], Workers],
        limits: Limits,
        delivery: Delivery,
        policy: Policy,
        metrics: Metrics | None = None,
    ) -> None:
        self.repos = repos
        self.policy = policy
        self.images = images
        self.queue = queue
        self.limits = limits
        self.delivery = delivery
        self.worker = worker_factory(self)
        self.metrics = metrics or Metrics(
            lambda: len(queue.waiting()),
            lambda: queue.speed.per_second,
            self.worker.health,
            self.remote_workers,
        )
        self._finished: dict[str, asyncio.Future[StoredJob]] = {}
        self._running: dict[str, StoredJob] = {}
        self._early_progress: dict[str, Progress] = {}
        """The latest step of a job whose row is not marked running yet, shown once it is."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._submitting = asyncio.Lock()
        """Held from the cap check to the enqueue, so concurrent submits cannot pass one cap."""

    async def start(self) -> None:
        """Recover what the last run left, then start serving the queue."""
        await self.recover()
        self.worker.start()

    async def stop(self) -> None:
        """Stop the worker (the running batch goes back to the queue) and finish hooks."""
        await self.worker.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def submit(
        self,
        request: GenerationRequest,
        origin: Origin,
        priority: Priority = Priority.NORMAL,
        place: Place | None = None,
    ) -> Ticket:
        """Check, store, then queue a job. The row exists before anyone hears "queued".

        A job a person asks for comes with its `place`, checked against the server's policy;
        the bot's own jobs (LoRA previews) and the CLI's have none.
        """
        if place is not None:
            await self.policy.check(place, request)
        request = check_request(request, self.limits)
        if not self.worker.health().alive:
            raise UserError(WORKER_STOPPED)
        # Check, store and enqueue under one lock (held for one INSERT): concurrent submits of
        # a user cannot all pass the cap, and a refused job is never stored for a restart to run.
        async with self._submitting:
            self.queue.check_room(str(origin.user_id))
            job = await self.repos.jobs.create(
                request,
                user_id=origin.user_id,
                guild_id=origin.guild_id,
                channel_id=origin.channel_id,
                interaction_id=origin.interaction_id,
                interaction_token=origin.interaction_token,
                priority=int(priority),
                channel_nsfw=origin.channel_nsfw,
            )
            self._finished[job.id] = asyncio.get_running_loop().create_future()
            self.queue.submit(job.id, str(origin.user_id), request, priority)
        return self.ticket(job.id)

    async def attach_status(self, job_id: str, message_id: int) -> None:
        """Keep the id of the message that shows the job, and send it previews from now on."""
        await self.repos.jobs.set_message(job_id, message_id)
        self.worker.want_previews(job_id)

    def waiting_count(self) -> int:
        return len(self.queue.waiting())

    def ticket(self, job_id: str) -> Ticket:
        return Ticket(job_id, self.queue.position(job_id), self.queue.eta_s(job_id))

    def jobs_of(self, user_id: int) -> list[QueuedJob]:
        """A user's unfinished jobs, running first, then in the order they will run."""
        waiting = {job.job_id: place for place, job in enumerate(self.queue.waiting(), start=1)}
        jobs = [job for job in self.queue.unfinished() if job.user_id == str(user_id)]
        jobs.sort(key=lambda job: (job.job_id in waiting, waiting.get(job.job_id, 0)))
        return [
            QueuedJob(
                job_id=job.job_id,
                prompt=job.request.prompt,
                running=bool(job.running or job.results),
                position=waiting.get(job.job_id),
                eta_s=self.queue.eta_s(job.job_id),
                images=job.request.count,
            )
            for job in jobs
        ]

    async def status(self) -> ServiceStatus:
        """Model, device, device memory, queue depth, measured speed and LoRA count."""
        backend = self.worker.backend
        device = backend.device
        used, total = _device_memory() if device == "cuda" else (None, None)
        unfinished = self.queue.unfinished()
        waiting = len(self.queue.waiting())
        running = sum(1 for job in unfinished if job.running)
        health, now = self.worker.health(), time.time()
        return ServiceStatus(
            model=backend.default_model,
            device=device,
            memory_used_bytes=used,
            memory_total_bytes=total,
            waiting=waiting,
            running=running,
            pixel_steps_per_s=self.queue.speed.per_second,
            loras=len(await self.repos.loras.names()),
            worker=health.describe(now),
            worker_ok=health.ok(now),
            workers=self.remote_workers(),
        )

    def remote_workers(self) -> tuple[WorkerRow, ...]:
        """The live remote workers from their latest heartbeats; none without QUEUE_URL."""
        if not isinstance(self.worker, RemoteWorkers):
            return ()
        return worker_rows(self.worker.workers(), time.time())

    async def wait(self, job_id: str) -> StoredJob:
        """Wait until the job is finished and handed to the delivery; its final row."""
        future = self._finished.get(job_id)
        if future is None:
            job = await self.repos.jobs.get(job_id)
            if job is None:
                raise UserError(f"there is no job {job_id}")
            return job
        return await future

    async def cancel(self, job_id: str, user_id: int, is_admin: bool = False) -> str:
        """Cancel a queued or running job of `user_id` (an admin may cancel anyone's)."""
        job = await self.repos.jobs.get(job_id)
        if job is None:
            raise UserError("that job does not exist (any more)")
        if job.user_id != user_id and not is_admin:
            raise UserError("only the person who asked for it, or an admin, can cancel this job")
        outcome = self.queue.cancel(job_id)
        if outcome is CancelOutcome.NOT_FOUND:
            raise UserError("that job has already finished")
        try:
            cancelled = await self.repos.jobs.mark_cancelled(job_id)
        except InvalidTransition:
            raise UserError("that job has already finished") from None
        self.metrics.job_finished("cancelled")
        await self._finish(cancelled, lambda: self.delivery.report_failure(cancelled, "cancelled"))
        return "stopping it now" if outcome is CancelOutcome.STOPPING else "removed from the queue"

    async def recover(self) -> None:
        """Requeue what was waiting, retry what was running once, and deliver what was not."""
        for job in await self.repos.jobs.jobs_in_state(StoredState.RUNNING):
            if job.attempts >= MAX_ATTEMPTS:
                failed = await self.repos.jobs.mark_failed(job.id, RESTART_FAILURE)
                await self._finish(failed, functools.partial(self._report, failed, RESTART_FAILURE))
            else:
                log.info("job %s was running at shutdown; running it again", job.id)
                await self.repos.jobs.requeue(job.id)
        for job in await self.repos.jobs.list_queued():
            self._finished[job.id] = asyncio.get_running_loop().create_future()
            self.queue.restore(job.id, str(job.user_id), job.request, Priority(job.priority))
        for job in await self.repos.jobs.undelivered():
            await self._redeliver(job)

    async def _redeliver(self, job: StoredJob) -> None:
        if job.state is StoredState.DONE:
            generation = await self.repos.generations.for_job(job.id)
            if generation is not None:
                await self._finish(job, lambda: self.delivery.deliver(job, generation))
                return
        await self._finish(job, lambda: self._report(job, job.error or "cancelled"))

    # Worker hooks: all run on the event loop.

    def on_job_started(self, job: Job) -> None:
        self._spawn(self._mark_running(job.job_id))

    def on_progress(self, progress: Progress) -> None:
        stored = self._running.get(progress.job_id)
        if stored is None:
            self._early_progress[progress.job_id] = progress
            return
        self.delivery.progress(stored, progress.step, progress.total, progress.preview)

    async def on_job_done(self, job: Job, results: list[ImageResult]) -> None:
        try:
            new_images = await asyncio.to_thread(self._store_images, results)
            generation = await self.repos.generations.create(
                job.job_id, new_images, parent_image_id=job.request.parent_image_id
            )
        except DiskFull as full:  # the images or their rows found no room: answer, not hang
            await self.on_job_failed(job, str(full))
            return
        except InvalidTransition:
            log.info("job %s finished after it was cancelled; dropping its images", job.job_id)
            return
        except Exception:  # a bug storing them: the job is answered, not left running
            log.exception("storing the images of job %s failed", job.job_id)
            await self.on_job_failed(job, STORE_FAILED)
            return
        stored = await self.repos.jobs.get(job.job_id)
        assert stored is not None
        self._running.pop(job.job_id, None)
        self._early_progress.pop(job.job_id, None)
        self._log_finished(job, "done", results)
        await self._finish(stored, lambda: self.delivery.deliver(stored, generation))

    async def on_job_failed(self, job: Job, message: str) -> None:
        self._running.pop(job.job_id, None)
        self._early_progress.pop(job.job_id, None)
        self._log_finished(job, "failed", [], message)
        try:
            failed = await self.repos.jobs.mark_failed(job.job_id, message)
        except InvalidTransition:
            return  # cancelled meanwhile: the user already heard
        await self._finish(failed, lambda: self._report(failed, message))

    def on_out_of_memory(self, batch_size: int) -> None:
        self.metrics.oom_retries += 1
        log.warning("a batch of %d ran out of device memory; splitting it", batch_size)

    def _log_finished(
        self, job: Job, state: str, results: list[ImageResult], error: str | None = None
    ) -> None:
        """One structured line per job: ids, timings, batch size and device memory."""
        now = time.monotonic()
        wait = (job.started_at or now) - job.created_at
        run = now - (job.started_at or now)
        timings = results[0].timings if results else {}
        self.metrics.job_finished(state, len(results), wait if job.started_at else None)
        log.info(
            "job=%s user=%s state=%s images=%d wait_s=%.2f run_s=%.2f batch_size=%s "
            "peak_memory_mb=%s%s",
            job.job_id,
            job.user_id,
            state,
            len(results),
            wait,
            run,
            timings.get("batch_size", "-"),
            timings.get("peak_memory_mb", "-"),
            f" error={error!r}" if error else "",
        )

    async def _mark_running(self, job_id: str) -> None:
        with contextlib.suppress(InvalidTransition):  # cancelled before its batch started
            self._running[job_id] = await self.repos.jobs.mark_running(job_id)
        # Steps can arrive before the row is written; the latest of them is still worth showing.
        if (early := self._early_progress.pop(job_id, None)) and job_id in self._running:
            self.on_progress(early)

    def _store_images(self, results: list[ImageResult]) -> list[NewImage]:
        """Encode and write the PNGs (blocking: runs in a thread)."""
        from pipeline.png import png_bytes

        stored = []
        for result in results:
            file = self.images.put(png_bytes(result.image, result.parameters))
            stored.append(
                NewImage(
                    stored=file,
                    seed=result.task.seed,
                    width=result.image.width,
                    height=result.image.height,
                    parameters=result.parameters,
                    variation_seed=result.task.variation_seed,
                    flagged=result.flagged,
                )
            )
        return stored

    async def _report(self, job: StoredJob, message: str) -> None:
        await self.delivery.report_failure(job, message)

    async def _finish(self, job: StoredJob, post: Callable[[], Awaitable[None]]) -> None:
        """Post the outcome once: mark delivered only after the post worked.

        A failed post is tried again at the next start, up to `MAX_DELIVERY_ATTEMPTS` tries;
        a try cut short by a crash counts too.
        """
        attempt = await self.repos.jobs.count_delivery_attempt(job.id)
        if attempt > MAX_DELIVERY_ATTEMPTS:
            await self._give_up_delivery(job)
        else:
            try:
                await post()
            except Exception:
                last = attempt == MAX_DELIVERY_ATTEMPTS
                log.exception(
                    "could not deliver job %s (try %d of %d); %s",
                    job.id,
                    attempt,
                    MAX_DELIVERY_ATTEMPTS,
                    "giving up" if last else "it will be retried at the next start",
                )
                if last:
                    await self._give_up_delivery(job)
            else:
                await self.repos.jobs.mark_delivered(job.id)
        final = await self.repos.jobs.get(job.id) or job
        future = self._finished.pop(job.id, None)
        if future is not None and not future.done():
            future.set_result(final)

    async def _give_up_delivery(self, job: StoredJob) -> None:
        """Stop retrying; a user whose images exist hears once where to find them."""
        await self.repos.jobs.mark_delivery_failed(job.id)
        log.error("job %s: delivery given up after %d tries", job.id, MAX_DELIVERY_ATTEMPTS)
        generation = await self.repos.generations.for_job(job.id)
        if generation is None:
            return  # what failed to post was the failure report itself: no other way to tell
        try:
            await self.delivery.report_failure(job, undeliverable(generation.id))
        except Exception:
            log.exception("job %s: could not tell the user that delivery was given up", job.id)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _device_memory() -> tuple[int | None, int | None]:
    """CUDA memory in use by the card and its size; torch is already loaded by the engine."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None, None
    free, total = torch.cuda.mem_get_info()
    return total - free, total
