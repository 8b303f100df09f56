"""The batch planner: which queued images run together in the next model call.

Pure functions over a snapshot of the queue, so the rules are testable without asyncio.

Starvation bound: a job that could run (its user is under the running cap) and is left out of a
batch is "passed over". Once passed over `overdue_after` times it is overdue, and the oldest
overdue job (by created order) leads the next batch, ahead of fairness order and priority. So a
job is passed over at most `overdue_after` + B times, where B is the number of batches that the
overdue jobs created before it still need (each needs at most its remaining image count). No job
created after it can delay it once it is overdue, so B is fixed when it becomes overdue.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.backend import ImageTask
from pipeline.request import EDIT_MODES, GenerationRequest

BatchKey = tuple[Hashable, ...]


def batch_key(request: GenerationRequest) -> BatchKey:
    """The fields that must be equal for images to share one model call.

    LoRAs are sorted because the weight patches add up in any order; hypernetworks are not,
    since each one transforms the previous one's output. The RNG and ENSD are in, since the
    engine routes a whole batch's library noise through one source. Prompts, seeds and
    variation seeds are per image and stay out.

    An edit's pictures (init image and mask) are per job, and each task's own are loaded, so
    they stay out too; its mask treatment changes the pass and is in. The model is in, so an
    edit on an inpainting (9-channel) model never meets one on a normal model.

    ControlNet units and image prompts are in by their models and settings, not their
    pictures: each task's own maps and pictures are loaded, so jobs guided by different
    pictures still share a batch.

    A tiled upscale's tile spec is in: its tiles and their UNet batches are the pass. Fast
    mode's token merging is in: it patches the UNet for the whole batch.
    """
    edit = request.mode in EDIT_MODES
    loras = tuple(sorted((ref.name, ref.te_weight, ref.unet_weight) for ref in request.loras))
    hypernets = tuple((ref.name, ref.strength) for ref in request.hypernets)
    return (
        request.model,
        loras,
        hypernets,
        request.width,
        request.height,
        request.steps,
        request.sampler,
        request.schedule,
        request.cfg,
        request.clip_skip,
        request.rng,
        request.ensd,
        request.hires,
        request.mode,
        request.strength,
        None if edit else request.init_image,
        request.inpaint_spec if edit else None,
        tuple((u.model, u.weight, u.start, u.end) for u in request.controls),
        tuple((one.weight, one.style) for one in request.image_prompts),
        request.tiles,
        request.token_merging,
    )


@dataclass(frozen=True)
class Candidate:
    """A queued job as the planner sees it: the images it still needs and how long it waited."""

    job_id: str
    user_id: str
    request: GenerationRequest
    pending: tuple[int, ...]
    started: bool
    passed_over: int
    order: int


def plan_batch(
    candidates: Sequence[Candidate],
    *,
    capacity: Callable[[GenerationRequest], int],
    limit: int,
    overdue_after: int,
    running_by_user: Mapping[str, int],
    max_running: int,
) -> list[ImageTask]:
    """The next batch: the head job's images plus compatible images of other jobs.

    `candidates` are in fairness order. The head is the oldest overdue job, else the first that
    may run; the batch holds up to min(`limit`, `capacity(head request)`) images, taken from
    the head first and then from compatible jobs in fairness order, so a job asking for more
    images than fit is split across batches. A job that has not started may join only while
    its user is under `max_running` running jobs. Empty when nothing may run.
    """
    running = dict(running_by_user)

    def may_run(candidate: Candidate) -> bool:
        return candidate.started or running.get(candidate.user_id, 0) < max_running

    head = choose_head(candidates, may_run, overdue_after)
    if head is None:
        return []
    size = max(1, min(limit, capacity(head.request)))
    key = batch_key(head.request)
    tasks: list[ImageTask] = []
    for candidate in (head, *(c for c in candidates if c is not head)):
        room = size - len(tasks)
        if room == 0:
            break
        if not candidate.pending or batch_key(candidate.request) != key or not may_run(candidate):
            continue
        taken = candidate.pending[:room]
        tasks.extend(ImageTask(candidate.job_id, index, candidate.request) for index in taken)
        if not candidate.started:
            running[candidate.user_id] = running.get(candidate.user_id, 0) + 1
    return tasks


def choose_head(
    candidates: Sequence[Candidate],
    may_run: Callable[[Candidate], bool],
    overdue_after: int,
) -> Candidate | None:
    """The job that leads the next batch: the oldest overdue one, else the first in order."""
    runnable = [c for c in candidates if c.pending and may_run(c)]
    overdue = [c for c in runnable if c.passed_over >= overdue_after]
    if overdue:
        return min(overdue, key=lambda c: c.order)
    return runnable[0] if runnable else None
