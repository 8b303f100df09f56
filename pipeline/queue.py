"""The job queue: fair order across users, per-user caps, positions and ETAs.

Lives on the event loop and is never touched from the worker thread, except that the thread
reads `Job.state` to learn that a batch's jobs were cancelled (a plain attribute read).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from pipeline.backend import ImageResult, ImageTask
from pipeline.errors import UserError
from pipeline.planner import Candidate, plan_batch
from pipeline.request import GenerationRequest
from pipeline.tiles import LATENT_FACTOR, tile_layout

DEFAULT_PIXEL_STEPS_PER_S = 2.5e6
"""A mid-range GPU: one 512x512, 25-step image in about 2.6 s. Replaced by the first batch."""


class Priority(IntEnum):
    """Low-priority work (LoRA previews) goes after every normal job, unless it is overdue."""

    NORMAL = 0
    LOW = 1


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    """Started: some images are made or in the running batch; the rest may still wait."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CancelOutcome(StrEnum):
    NOT_FOUND = "not_found"
    REMOVED = "removed"
    """Nothing of it was running; it is gone from the queue."""
    STOPPING = "stopping"
    """Images of it are in the running batch; the worker drops them (and stops the batch
    between steps when nothing else in it still wants its images)."""


@dataclass(eq=False)
class Job:
    """One user request on the queue, with the images it still needs and those it has."""

    job_id: str
    user_id: str
    request: GenerationRequest
    priority: Priority
    order: int
    created_at: float
    state: JobState = JobState.QUEUED
    pending: list[int] = field(default_factory=list)
    running: set[int] = field(default_factory=set)
    results: dict[int, ImageResult] = field(default_factory=dict)
    passed_over: int = 0
    started_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state in (JobState.QUEUED, JobState.RUNNING)

    def ordered_results(self) -> list[ImageResult]:
        return [self.results[index] for index in sorted(self.results)]


def image_cost(request: GenerationRequest) -> int:
    """Pixel-steps of one image: width x height x steps, plus the hires pass at its own size.

    A tiled upscale's UNet runs over every tile at every step, overlaps included: its cost is
    tiles x tile pixels x steps.
    """
    if request.tiles is not None:
        tile = tile_layout(request.width, request.height, request.tiles)
        return len(tile) * tile[0].height * tile[0].width * LATENT_FACTOR**2 * request.steps
    cost = request.width * request.height * request.steps
    if request.hires is not None:
        hires = request.hires
        hires_pixels = round(request.width * hires.scale) * round(request.height * hires.scale)
        cost += hires_pixels * (hires.steps or request.steps)
    return cost


class SpeedEstimate:
    """Measured pixel-steps per second, exponentially smoothed.

    Smoothing keeps one slow batch (a LoRA load, a cold cache) from swinging every ETA; the
    first measurement replaces the default outright, since the default is only a guess.
    """

    def __init__(self, initial: float = DEFAULT_PIXEL_STEPS_PER_S, smoothing: float = 0.3) -> None:
        self.per_second = initial
        self._smoothing = smoothing
        self._measured = False

    def record(self, pixel_steps: float, seconds: float) -> None:
        if seconds <= 0 or pixel_steps <= 0:
            return
        rate = pixel_steps / seconds
        if self._measured:
            rate = self._smoothing * rate + (1 - self._smoothing) * self.per_second
        self.per_second = rate
        self._measured = True

    def seconds_for(self, pixel_steps: float) -> float:
        return pixel_steps / self.per_second


class JobQueue:
    """Queued and running jobs, in fair order: round-robin by user, oldest first per user.

    Fairness order: normal before low priority; then each user's first waiting job, then
    each user's second, and so on; among equals, the user served longest ago first, then the
    oldest job. Overdue jobs (see pipeline.planner for the starvation bound) lead, oldest first.
    """

    def __init__(
        self,
        *,
        max_queued_per_user: int,
        max_running_per_user: int,
        overdue_after: int = 12,
        speed: SpeedEstimate | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_queued_per_user = max_queued_per_user
        self.max_running_per_user = max_running_per_user
        self.overdue_after = overdue_after
        self.speed = speed or SpeedEstimate()
        self._clock = clock
        self._jobs: dict[str, Job] = {}  # active jobs; insertion order is created order
        self._last_served: dict[str, int] = {}
        self._batches = 0
        self._next_order = 0
        self._running_since = 0.0
        self._changed = asyncio.Event()

    def submit(
        self,
        job_id: str,
        user_id: str,
        request: GenerationRequest,
        priority: Priority = Priority.NORMAL,
    ) -> Job:
        """Queue a new job, or raise UserError when the user already has too many waiting."""
        self.check_room(user_id)
        return self.restore(job_id, user_id, request, priority)

    def check_room(self, user_id: str) -> None:
        """Raise UserError when the user has the most jobs allowed with images still to start.

        The service calls it before storing a job, under a lock per user that also covers the
        store and `submit`, so no two submissions of one user both pass it.
        """
        waiting = sum(1 for job in self._jobs.values() if job.user_id == user_id and job.pending)
        if waiting >= self.max_queued_per_user:
            raise UserError(
                f"you already have {waiting} jobs waiting, the most allowed: wait for one to "
                "start or cancel one (/queue), then try again"
            )

    def restore(
        self,
        job_id: str,
        user_id: str,
        request: GenerationRequest,
        priority: Priority = Priority.NORMAL,
    ) -> Job:
        """Queue a job accepted before a restart; no cap applies, it was already accepted.

        Restore in created order, so the oldest stay first.
        """
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} is already on the queue")
        if request.count < 1:
            raise ValueError(f"job {job_id} asks for {request.count} images")
        job = Job(
            job_id=job_id,
            user_id=user_id,
            request=request,
            priority=priority,
            order=self._next_order,
            created_at=self._clock(),
            pending=list(range(request.count)),
        )
        self._next_order += 1
        self._jobs[job_id] = job
        self._changed.set()
        return job

    def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job; running images are dropped by the worker, which reads `Job.state`."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return CancelOutcome.NOT_FOUND
        job.state = JobState.CANCELLED
        job.pending.clear()
        self._changed.set()  # its user may be under the running cap again
        return CancelOutcome.STOPPING if job.running else CancelOutcome.REMOVED

    def fail(self, job_id: str) -> Job | None:
        """Take a job off the queue as failed; None when it is no longer active."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return None
        job.state = JobState.FAILED
        job.pending.clear()
        self._changed.set()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def unfinished(self) -> list[Job]:
        """Active jobs in created order (what a restart must run again)."""
        return list(self._jobs.values())

    def waiting(self) -> list[Job]:
        """Jobs with images still to start, in the order they will lead batches."""
        rank: Counter[tuple[str, Priority]] = Counter()
        keyed: list[tuple[tuple[object, ...], Job]] = []
        for job in self._jobs.values():
            if not job.pending:
                continue
            if job.passed_over >= self.overdue_after:
                keyed.append(((False, job.order), job))
                continue
            nth = rank[job.user_id, job.priority]
            rank[job.user_id, job.priority] += 1
            served = self._last_served.get(job.user_id, 0)
            keyed.append(((True, job.priority, nth, served, job.order), job))
        keyed.sort(key=lambda pair: pair[0])
        return [job for _, job in keyed]

    def position(self, job_id: str) -> int | None:
        """1-based place among jobs with images still to start; None if it has none."""
        for place, job in enumerate(self.waiting(), start=1):
            if job.job_id == job_id:
                return place
        return None

    def eta_s(self, job_id: str) -> float | None:
        """Seconds until the job's last image is done, from the measured speed."""
        job = self._jobs.get(job_id)
        if job is None:
            return None
        in_flight = sum(len(j.running) * image_cost(j.request) for j in self._jobs.values())
        elapsed = self._clock() - self._running_since
        seconds = max(0.0, self.speed.seconds_for(in_flight) - elapsed) if in_flight else 0.0
        if not job.pending:
            return seconds
        ahead = 0
        for other in self.waiting():
            ahead += len(other.pending) * image_cost(other.request)
            if other is job:
                break
        return seconds + self.speed.seconds_for(ahead)

    def running_by_user(self) -> Counter[str]:
        return Counter(job.user_id for job in self._jobs.values() if job.state is JobState.RUNNING)

    def has_work(self) -> bool:
        """Whether some job has images that may start now (its user is under the cap)."""
        running = self.running_by_user()
        return any(
            job.pending
            and (job.state is JobState.RUNNING or running[job.user_id] < self.max_running_per_user)
            for job in self._jobs.values()
        )

    async def wait_for_work(self) -> None:
        while not self.has_work():
            self._changed.clear()
            await self._changed.wait()

    def take_batch(
        self, capacity: Callable[[GenerationRequest], int], limit: int
    ) -> list[ImageTask]:
        """Plan the next batch and mark its images running; empty when nothing may start."""
        running = self.running_by_user()
        candidates = [
            Candidate(
                job_id=job.job_id,
                user_id=job.user_id,
                request=job.request,
                pending=tuple(job.pending),
                started=job.state is JobState.RUNNING,
                passed_over=job.passed_over,
                order=job.order,
            )
            for job in self.waiting()
        ]
        tasks = plan_batch(
            candidates,
            capacity=capacity,
            limit=limit,
            overdue_after=self.overdue_after,
            running_by_user=running,
            max_running=self.max_running_per_user,
        )
        if not tasks:
            return tasks
        self._batches += 1
        now = self._clock()
        self._running_since = now
        chosen = {task.job_id for task in tasks}
        for task in tasks:
            job = self._jobs[task.job_id]
            job.pending.remove(task.index)
            job.running.add(task.index)
        for job_id in chosen:
            job = self._jobs[job_id]
            job.state = JobState.RUNNING
            job.started_at = job.started_at if job.started_at is not None else now
            job.passed_over = 0
            self._last_served[job.user_id] = self._batches
        for candidate in candidates:
            could_run = candidate.started or running[candidate.user_id] < self.max_running_per_user
            if could_run and candidate.job_id not in chosen:
                self._jobs[candidate.job_id].passed_over += 1
        return tasks

    def complete(
        self, tasks: Sequence[ImageTask], results: Sequence[ImageResult], seconds: float
    ) -> list[Job]:
        """Record a finished batch (one result per task); return the jobs now done.

        Images of jobs cancelled or failed meanwhile are dropped, but still count towards the
        measured speed, since the device did the work.
        """
        self.speed.record(sum(image_cost(task.request) for task in tasks), seconds)
        done: list[Job] = []
        for result in results:
            job = self._jobs.get(result.task.job_id)
            if job is None:
                continue
            job.running.discard(result.task.index)
            job.results[result.task.index] = result
            if not job.pending and not job.running and len(job.results) == job.request.count:
                job.state = JobState.DONE
                del self._jobs[job.job_id]
                done.append(job)
        self._changed.set()
        return done

    def requeue(self, tasks: Sequence[ImageTask]) -> None:
        """Put the images of an interrupted batch back; they keep their jobs' places.

        Images no longer running (finished, or their job gone) are left as they are.
        """
        for task in tasks:
            job = self._jobs.get(task.job_id)
            if job is None or task.index not in job.running:
                continue
            job.running.discard(task.index)
            job.pending.append(task.index)
            job.pending.sort()
        self._changed.set()
