"""The bot's `Backend` for one remote worker: publish a batch, block until its replies come.

`RemoteBackend.run` runs on its `Worker` loop's model thread, like the engine does in one
process, so the worker loop (split after out of memory, requeue after an interruption) works
unchanged. Redis is spoken on the event loop; replies reach the waiting thread through
`Replies`, keyed by batch id, so a reply for a batch nobody waits for any more (a batch that
ran twice, a job already finished) is dropped there.
"""

from __future__ import annotations

import asyncio
import io
import queue
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image
from redis.exceptions import RedisError

from pipeline.backend import (
    BatchInterrupted,
    ImageResult,
    ImageTask,
    OutOfDeviceMemory,
    StepCallback,
)
from pipeline.errors import UserError
from pipeline.remote.messages import Batch, Failure, Heartbeat, Progress, Result
from pipeline.remote.streams import Streams
from pipeline.request import GenerationRequest

T = TypeVar("T")

POLL_S = 0.1
"""How often a waiting batch looks at `should_stop` between replies."""
RETRY_PAUSE_S = 0.5


@dataclass(frozen=True)
class Lost:
    """The batch will not be answered: its worker went silent, or Redis lost the entry."""

    reason: str


Reply = Result | Failure | Progress | Lost


@dataclass(frozen=True)
class Placed:
    """A batch in flight: the worker whose stream holds it and its entry id there."""

    worker: str
    entry_id: str


class Replies:
    """Mailboxes of the batches in flight, by batch id (thread-safe: loop in, threads out)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._boxes: dict[str, queue.SimpleQueue[Reply]] = {}
        self._placed: dict[str, Placed] = {}

    def open(self, batch_id: str) -> queue.SimpleQueue[Reply]:
        box: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        with self._lock:
            self._boxes[batch_id] = box
        return box

    def place(self, batch_id: str, placed: Placed) -> None:
        with self._lock:
            if batch_id in self._boxes:
                self._placed[batch_id] = placed

    def close(self, batch_id: str) -> None:
        with self._lock:
            self._boxes.pop(batch_id, None)
            self._placed.pop(batch_id, None)

    def deliver(self, batch_id: str, reply: Reply) -> bool:
        """Hand `reply` to the batch's waiting thread; False when nobody waits for it."""
        with self._lock:
            box = self._boxes.get(batch_id)
        if box is None:
            return False
        box.put(reply)
        return True

    def in_flight(self) -> dict[str, Placed]:
        with self._lock:
            return dict(self._placed)


Manifest = Callable[[Sequence[GenerationRequest]], dict[str, dict[str, str]]]


class RemoteBackend:
    """Runs batches on the worker `name` (see the module docstring)."""

    def __init__(
        self,
        streams: Streams,
        replies: Replies,
        name: str,
        heartbeat: Callable[[], Heartbeat],
        manifest: Manifest,
        loop: asyncio.AbstractEventLoop,
        cancel_ttl_s: float,
    ) -> None:
        self._streams = streams
        self._replies = replies
        self.name = name
        self._heartbeat = heartbeat
        self._manifest = manifest
        self._loop = loop
        self._cancel_ttl_s = cancel_ttl_s

    @property
    def device(self) -> str | None:
        return self._heartbeat().device

    @property
    def default_model(self) -> str | None:
        return self._heartbeat().default_model

    @property
    def measure_peak(self) -> Callable[[int], int] | None:
        return None  # the worker calibrates on its own device and reports the fitted model

    def free_memory(self) -> None:
        """Nothing here: the worker freed its device's memory before replying."""

    def run(
        self,
        tasks: Sequence[ImageTask],
        on_step: StepCallback,
        should_stop: Callable[[], bool],
    ) -> list[ImageResult]:
        batch_id = uuid.uuid4().hex
        box = self._replies.open(batch_id)
        settled = False
        try:
            batch = Batch(
                batch_id, self.name, tuple(tasks), self._manifest([t.request for t in tasks])
            )
            entry_id = self._until_sent(lambda: self._streams.publish_batch(batch), should_stop)
            self._replies.place(batch_id, Placed(self.name, entry_id))
            results = self._collect(tasks, box, on_step, should_stop)
            settled = True
            self._on_loop(self._streams.forget_batch(self.name, entry_id))
            return results
        finally:
            self._replies.close(batch_id)
            if not settled:
                # The worker may not have read it yet: it skips a cancelled batch.
                self._on_loop(self._streams.cancel(batch_id, self._cancel_ttl_s))

    def _collect(
        self,
        tasks: Sequence[ImageTask],
        box: queue.SimpleQueue[Reply],
        on_step: StepCallback,
        should_stop: Callable[[], bool],
    ) -> list[ImageResult]:
        wanted = {(task.job_id, task.index): task for task in tasks}
        results: dict[tuple[str, int], ImageResult] = {}
        while len(results) < len(wanted):
            if should_stop():
                raise BatchInterrupted
            try:
                reply = box.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if isinstance(reply, Progress):
                on_step(reply.step, reply.total, _previews(reply, len(tasks)))
            elif isinstance(reply, Result):
                key = (reply.job_id, reply.index)
                if key in wanted and key not in results:
                    results[key] = _image_result(wanted[key], reply)
            elif isinstance(reply, Failure):
                _raise(reply)
            else:
                raise BatchInterrupted(reply.reason)
        return [results[(task.job_id, task.index)] for task in tasks]

    def _until_sent(self, send: Callable[[], Awaitable[T]], should_stop: Callable[[], bool]) -> T:
        """Send on the event loop, waiting out a Redis outage unless the batch must stop."""
        while True:
            try:
                return self._on_loop(send()).result()
            except RedisError:
                if should_stop():
                    raise BatchInterrupted from None
                time.sleep(RETRY_PAUSE_S)

    def _on_loop(self, work: Awaitable[T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(_coroutine(work), self._loop)


async def _coroutine(work: Awaitable[T]) -> T:
    return await work


def _previews(reply: Progress, count: int) -> Callable[[], list[Image.Image]]:
    """The reply's previews, decoded only when the worker loop asks for them.

    A progress message without previews (or with too few) shows blank ones: the loop asks for
    previews by time, not by what the worker chose to send."""

    def decode() -> list[Image.Image]:
        images = [Image.open(io.BytesIO(webp)).convert("RGB") for webp in reply.previews]
        blank = Image.new("RGB", (8, 8))
        return (images + [blank] * count)[:count]

    return decode


def _image_result(task: ImageTask, reply: Result) -> ImageResult:
    from pipeline.png import parameters_of

    image = Image.open(io.BytesIO(reply.png))
    parameters = parameters_of(image) or ""
    return ImageResult(task, image.convert("RGB"), parameters, reply.timings, reply.flagged)


def _raise(failure: Failure) -> None:
    if failure.kind == "out_of_memory":
        raise OutOfDeviceMemory(failure.text)
    if failure.kind == "interrupted":
        raise BatchInterrupted(failure.text)
    if failure.kind == "user_error":
        raise UserError(failure.text)
    raise RuntimeError(f"worker {failure.worker}: {failure.text}")
