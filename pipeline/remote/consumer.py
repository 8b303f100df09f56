"""The worker process's loop: take the batches sized for this worker, run them, reply.

It runs one batch at a time on one model thread with the engine the bot would use, checks the
cancel key between steps, publishes progress (coalesced: lossy by design) and one result per
image, and acknowledges only after publishing, so a crash leaves the batch pending for the bot
to reclaim. A heartbeat says what the bot needs to size and route batches. Redis going away
is waited out; a message that does not parse is dead-lettered; nothing here stops the loop
but `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from pipeline.backend import Backend, BatchInterrupted, OutOfDeviceMemory
from pipeline.errors import UserError
from pipeline.memory import MemoryModel
from pipeline.png import png_bytes
from pipeline.remote.messages import (
    Batch,
    Failure,
    FailureKind,
    Heartbeat,
    MessageError,
    Progress,
    Result,
    decode,
)
from pipeline.remote.streams import WORKERS_GROUP, Entry, Streams

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
"""At most one progress message this often (and always the last step): the bot's edits are
coalesced anyway, so more would only fill the capped stream."""
PREVIEW_SIDE = 96
CANCEL_POLL_S = 0.2
READ_BLOCK_MS = 500
RETRY_PAUSE_S = 0.5
RECENT_FILES = 64
"""Library files (by sha256) reported as held: those of the latest batches."""


class BatchConsumer:
    """Serves this worker's stream until `stop()`; see the module docstring."""

    def __init__(
        self,
        streams: Streams,
        backend: Backend,
        name: str,
        *,
        memory: Callable[[], MemoryModel],
        budget: Callable[[], int],
        heartbeat_s: float,
        lease_s: float,
        cuda_device: str | None = None,
        prepare: Callable[[Batch], Awaitable[Batch]] | None = None,
    ) -> None:
        self._streams = streams
        self._backend = backend
        self.name = name
        self._memory = memory
        self._budget = budget
        self._heartbeat_s = heartbeat_s
        self._lease_s = lease_s
        self._cuda_device = cuda_device
        self._prepare = prepare
        """Fetches the manifest's files before a batch and points its requests at this
        worker's copies of their pictures (bot.file_cache.WorkerFiles.prepare_batch)."""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dreamcord-model")
        self._stopping = threading.Event()
        self._batch_id: str | None = None
        self._models: OrderedDict[str, None] = OrderedDict()
        self._files: OrderedDict[str, None] = OrderedDict()
        self._images_per_s = 0.0
        self._redis_down = False

    async def call(self, fn: Callable[[], object]) -> object:
        """Run `fn` on the model thread (calibration before serving)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def stop(self) -> None:
        """Stop at the next step boundary: the running batch goes back to the bot."""
        self._stopping.set()

    async def run(self) -> None:
        """Heartbeat and serve batches until `stop()`; then sign off."""
        beating = asyncio.create_task(self._beat_forever(), name="heartbeat")
        try:
            while not self._stopping.is_set():
                try:
                    entry = await self._streams.next_batch(self.name, READ_BLOCK_MS)
                    if entry is not None:
                        await self._handle(entry)
                    self._redis_up()
                except RedisError as error:
                    self._redis_lost(error)
                    await asyncio.sleep(RETRY_PAUSE_S)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            with contextlib.suppress(RedisError):
                await self._streams.sign_off(self.name)
            self._thread.shutdown(wait=True)

    async def _handle(self, entry: Entry) -> None:
        try:
            batch = decode(entry.data)
            if not isinstance(batch, Batch):
                raise MessageError(f"a {batch.TYPE} message on a batch stream")
            if batch.worker != self.name:
                raise MessageError(f"a batch sized for worker {batch.worker!r}")
        except MessageError as error:
            await self._streams.dead_letter(entry, str(error), WORKERS_GROUP)
            return
        if await self._streams.cancelled(batch.batch_id):
            log.info("batch %s was cancelled before it started", batch.batch_id)
        else:
            for reply in await self._run(batch, entry):
                await self._publish(reply)
        await self._streams.ack_batch(self.name, entry.entry_id)

    async def _run(self, batch: Batch, entry: Entry) -> Sequence[Result | Failure]:
        """Run one batch on the model thread; its replies, results or one failure."""
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        self._batch_id = batch.batch_id
        self._remember(batch)
        watching = asyncio.create_task(self._watch(batch.batch_id, entry, cancelled))
        kind: FailureKind
        try:
            if self._prepare is not None:
                batch = await self._prepare(batch)  # files; the lease is kept meanwhile
            started = time.perf_counter()
            results = await loop.run_in_executor(
                self._thread, self._run_on_thread, batch, cancelled, loop
            )
        except OutOfDeviceMemory:
            await loop.run_in_executor(self._thread, self._free_memory)
            kind, text = "out_of_memory", f"out of device memory at {len(batch.tasks)} images"
        except BatchInterrupted:
            kind, text = "interrupted", "cancelled" if cancelled.is_set() else "worker stopping"
        except UserError as error:
            kind, text = "user_error", str(error)
        except Exception as error:
            log.exception("batch %s failed", batch.batch_id)
            kind, text = "error", f"{type(error).__name__}: {error}"
        else:
            seconds = time.perf_counter() - started
            rate = len(results) / seconds if seconds > 0 else 0.0
            self._images_per_s = (
                rate if not self._images_per_s else 0.7 * self._images_per_s + 0.3 * rate
            )
            return results
        finally:
            watching.cancel()
            self._batch_id = None
        log.info("batch %s: %s (%s)", batch.batch_id, kind, text)
        return [Failure(batch.batch_id, kind, text, self.name)]

    def _run_on_thread(
        self, batch: Batch, cancelled: threading.Event, loop: asyncio.AbstractEventLoop
    ) -> list[Result]:
        last_sent = -float("inf")

        def on_step(step: int, total: int, previews: Callable[[], list[Image.Image]]) -> None:
            nonlocal last_sent
            now = time.monotonic()
            if now - last_sent < PROGRESS_INTERVAL_S and step < total:
                return
            last_sent = now
            progress = Progress(batch.batch_id, step, total, tuple(map(_webp, previews())))
            asyncio.run_coroutine_threadsafe(self._publish_progress(progress), loop)

        def should_stop() -> bool:
            return self._stopping.is_set() or cancelled.is_set()

        images = self._backend.run(batch.tasks, on_step, should_stop)
        return [
            Result(
                batch.batch_id,
                image.task.job_id,
                image.task.index,
                png_bytes(image.image, image.parameters),
                image.task.seed,
                image.timings,
                image.flagged,
                self.name,
            )
            for image in images
        ]

    def _free_memory(self) -> None:
        gc.collect()
        self._backend.free_memory()

    async def _watch(self, batch_id: str, entry: Entry, cancelled: threading.Event) -> None:
        """While the batch runs: turn its cancel key into `cancelled`, renew its lease."""
        renewed = time.monotonic()
        while not cancelled.is_set() and self._batch_id == batch_id:  # see _beat_forever
            await asyncio.sleep(CANCEL_POLL_S)
            try:
                if await self._streams.cancelled(batch_id):
                    cancelled.set()
                if time.monotonic() - renewed >= self._heartbeat_s:
                    await self._streams.renew(self.name, entry.entry_id)
                    renewed = time.monotonic()
            except RedisError as error:
                self._redis_lost(error)

    async def _publish(self, reply: Result | Failure) -> None:
        """Publish a reply, waiting out a Redis outage; given up only when stopping."""
        while True:
            try:
                await self._streams.publish(reply)
                return
            except RedisError as error:
                self._redis_lost(error)
                if self._stopping.is_set():
                    log.warning("stopping with the reply to batch %s unsent", reply.batch_id)
                    raise
                await asyncio.sleep(RETRY_PAUSE_S)

    async def _publish_progress(self, progress: Progress) -> None:
        with contextlib.suppress(RedisError):  # progress is lossy by design
            await self._streams.publish(progress)

    async def _beat_forever(self) -> None:
        # Until stopping, not forever: redis-py can turn the cancel that ends this task into
        # its own TimeoutError when it lands in a read.
        while not self._stopping.is_set():
            try:
                await self._streams.beat(self._heartbeat(), self._lease_s)
            except RedisError as error:
                self._redis_lost(error)
            await asyncio.sleep(self._heartbeat_s)

    def _heartbeat(self) -> Heartbeat:
        default = self._backend.default_model or "default"
        return Heartbeat(
            name=self.name,
            device=self._backend.device or "cpu",
            cuda_device=self._cuda_device,
            memory=self._memory(),
            budget_bytes=max(0, self._budget()),
            default_model=default,
            models=tuple(self._models) or (default,),
            files=tuple(self._files),
            state="stopping" if self._stopping.is_set() else "busy" if self._batch_id else "idle",
            batch_id=self._batch_id,
            images_per_s=self._images_per_s,
            time=time.time(),
        )

    def _remember(self, batch: Batch) -> None:
        """The batch's model and files are loaded now: what affinity routing reads."""
        default = self._backend.default_model or "default"
        for task in batch.tasks[:1]:
            model = default if task.request.model in ("", "default") else task.request.model
            self._models.pop(model, None)
            self._models[model] = None
            while len(self._models) > 2:  # the active model and one parked (ModelManager)
                self._models.popitem(last=False)
        for files in batch.manifest.values():
            for sha256 in files.values():
                self._files.pop(sha256, None)
                self._files[sha256] = None
        while len(self._files) > RECENT_FILES:
            self._files.popitem(last=False)

    def _redis_lost(self, error: Exception) -> None:
        if not self._redis_down:
            log.warning("Redis is unreachable (%s); retrying", error)
        self._redis_down = True

    def _redis_up(self) -> None:
        if self._redis_down:
            log.info("Redis is back")
        self._redis_down = False


def _webp(image: Image.Image) -> bytes:
    """A small WebP of a latent preview: a few kB, fit for the capped progress stream."""
    small = image.copy()
    small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, format="WEBP", quality=60)
    return buffer.getvalue()
