"""The bot's registry of remote workers: one `Worker` loop per live worker (docs/scale-out.md).

Each loop runs batches through a `RemoteBackend` and is sized with that worker's `Capacity`,
made from its heartbeat. Batches are planned late: a loop takes from the fair queue only when
its worker is idle, and when several are idle the one that has the head job's model and
LoRAs loaded goes first. Every heartbeat interval the registry starts loops for new workers,
stops those of workers silent for longer than the lease, takes back (XAUTOCLAIM) batches left
pending past the lease and gives up batches Redis lost; either way their images go back to
the queue and run elsewhere. One reader hands the workers' replies to the waiting batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from pipeline.backend import Backend
from pipeline.health import WorkerHealth
from pipeline.memory import Capacity
from pipeline.queue import JobQueue
from pipeline.remote.backend import Lost, Manifest, RemoteBackend, Replies
from pipeline.remote.messages import (
    Batch,
    Failure,
    Heartbeat,
    MessageError,
    Progress,
    Result,
    decode,
)
from pipeline.remote.streams import BOT_GROUP, Entry, Streams
from pipeline.worker import Worker

log = logging.getLogger(__name__)

READ_BLOCK_MS = 500
RETRY_PAUSE_S = 0.5
TURN_POLL_S = 0.05
BOT_CONSUMER = "bot"

LoopFactory = Callable[[Backend, Capacity, Callable[[], Awaitable[None]]], Worker]
"""Makes a worker loop from its backend, capacity and turn (the container sets the rest)."""


@dataclass(frozen=True)
class FleetInfo:
    """What /status shows as the service's backend: the workers as one."""

    device: str | None
    default_model: str | None


@dataclass
class _Live:
    beat: Heartbeat
    worker: Worker
    capacity: Capacity


class RemoteWorkers:
    """What the job service runs jobs through when QUEUE_URL is set (see the module docstring)."""

    def __init__(
        self,
        streams: Streams,
        queue: JobQueue,
        make_loop: LoopFactory,
        manifest: Manifest,
        *,
        lease_s: float,
        heartbeat_s: float,
        stuck_after_s: float,
        default_model: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._streams = streams
        self._queue = queue
        self._make_loop = make_loop
        self._manifest = manifest
        self._lease_s = lease_s
        self._heartbeat_s = heartbeat_s
        self._stuck_after_s = stuck_after_s
        self._default_model = default_model
        self._clock = clock
        self._replies = Replies()
        self._live: dict[str, _Live] = {}
        self._seen: dict[str, float] = {}
        self._benched: dict[str, float] = {}
        """Heartbeat time of a worker whose batch was taken back: older beats start no loop."""
        self._idle: dict[str, None] = {}
        """Loops waiting for their turn, longest waiting first."""
        self._idle_changed = asyncio.Event()
        self._preview_wanted: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._redis_down = False

    @property
    def backend(self) -> FleetInfo:
        count = len(self._live)
        return FleetInfo(f"remote: {count} worker{'s' * (count != 1)}", self._default_model)

    def workers(self) -> list[Heartbeat]:
        """The live workers' latest heartbeats, by name."""
        return [self._live[name].beat for name in sorted(self._live)]

    def start(self) -> None:
        """Start following heartbeats and replies; call from the running event loop."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._keep_watch(), name="remote-workers"),
            loop.create_task(self._read_replies(), name="remote-replies"),
        ]

    async def stop(self) -> None:
        """Stop every loop (running batches go back to the queue), then the watchers."""
        await asyncio.gather(*(live.worker.stop() for live in self._live.values()))
        self._live.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._streams.close()

    def health(self) -> WorkerHealth:
        """Alive while the registry watches; busy and stuck as the busiest loop is."""
        alive = bool(self._tasks) and not any(task.done() for task in self._tasks)
        healths = [live.worker.health() for live in self._live.values()]
        busy = [h for h in healths if h.busy_since is not None]
        stalled = max(busy, key=lambda h: h.stalled_for(time.time()) or 0.0, default=None)
        return WorkerHealth(
            alive=alive,
            busy_since=stalled.busy_since if stalled else None,
            last_step_at=stalled.last_step_at if stalled else None,
            restarts=sum(h.restarts for h in healths),
            last_error=next((h.last_error for h in healths if h.last_error), None),
            stuck_after_s=self._stuck_after_s,
        )

    def want_previews(self, job_id: str, wanted: bool = True) -> None:
        if wanted:
            self._preview_wanted.add(job_id)
        else:
            self._preview_wanted.discard(job_id)
        for live in self._live.values():
            live.worker.want_previews(job_id, wanted)

    async def _keep_watch(self) -> None:
        while True:
            try:
                await self.check()
                self._redis_up()
            except RedisError as error:
                self._redis_lost(error)
            except Exception:
                log.exception("checking the remote workers failed; trying again")
            await asyncio.sleep(self._heartbeat_s)

    async def check(self) -> None:
        """One round: follow heartbeats, take back what silent workers held."""
        now = self._clock()
        for beat in await self._streams.heartbeats():
            self._seen[beat.name] = now
            live = self._live.get(beat.name)
            if live is not None:
                live.beat = beat
                live.capacity.model = beat.memory
            elif beat.state != "stopping" and beat.time > self._benched.get(beat.name, -1.0):
                self._start_loop(beat)
        silent = {name for name, seen in self._seen.items() if now - seen > self._lease_s}
        for name, live in list(self._live.items()):
            if name in silent or live.beat.state == "stopping":
                log.info(
                    "worker %s is %s: stopping its loop",
                    name,
                    live.beat.state if name not in silent else "silent",
                )
                del self._live[name]
                await live.worker.stop()
        for name in list(self._seen):
            reclaimed = await self._streams.reclaim(name, self._lease_s)
            for entry in reclaimed:
                self._give_up(entry, f"worker {name} held it past the lease")
            if reclaimed and (live := self._live.pop(name, None)) is not None:
                # Its heartbeat may outlive it: no batches until a newer one comes.
                self._benched[name] = live.beat.time
                await live.worker.stop()
            if name in silent:
                del self._seen[name]
        for batch_id, placed in self._replies.in_flight().items():
            live = self._live.get(placed.worker)
            if live is not None and live.beat.batch_id == batch_id:
                continue
            if not await self._streams.has_batch(placed.worker, placed.entry_id):
                log.warning("batch %s is gone from Redis; it goes back to the queue", batch_id)
                self._replies.deliver(batch_id, Lost("the batch is gone from Redis"))

    def _start_loop(self, beat: Heartbeat) -> None:
        log.info("worker %s joined (%s, %s)", beat.name, beat.device, beat.cuda_device or "no CUDA")
        name = beat.name
        backend = RemoteBackend(
            self._streams,
            self._replies,
            name,
            lambda: self._beat_of(name, beat),
            self._manifest,
            asyncio.get_running_loop(),
            cancel_ttl_s=self._lease_s * 4,
        )
        capacity = Capacity(beat.memory, lambda: self._beat_of(name, beat).budget_bytes)
        worker = self._make_loop(backend, capacity, lambda: self._turn(name))
        for job_id in self._preview_wanted:
            worker.want_previews(job_id)
        self._live[name] = _Live(beat, worker, capacity)
        worker.start()

    def _beat_of(self, name: str, first: Heartbeat) -> Heartbeat:
        live = self._live.get(name)
        return live.beat if live is not None else first

    def _give_up(self, entry: Entry, reason: str) -> None:
        try:
            batch = decode(entry.data)
        except MessageError:
            return  # garbage the worker never read: nothing waits for it
        if isinstance(batch, Batch) and self._replies.deliver(batch.batch_id, Lost(reason)):
            log.warning("batch %s taken back: %s", batch.batch_id, reason)

    async def _turn(self, name: str) -> None:
        """Return when work may start and `name` is the idle worker best placed to run it."""
        self._idle[name] = None
        self._idle_changed.set()
        try:
            while True:
                await self._queue.wait_for_work()
                if self._best_idle() == name:
                    return
                self._idle_changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle_changed.wait(), TURN_POLL_S)
        finally:
            self._idle.pop(name, None)
            self._idle_changed.set()

    def _best_idle(self) -> str | None:
        """The idle worker with the head job's model and most of its files loaded; among
        equals, the one idle longest."""
        idle = [name for name in self._idle if name in self._live]
        waiting = self._queue.waiting()
        if len(idle) < 2 or not waiting:
            return idle[0] if idle else None
        request = waiting[0].request
        files = {sha for named in self._manifest([request]).values() for sha in named.values()}

        def affinity(name: str) -> tuple[bool, int]:
            beat = self._live[name].beat
            model = beat.default_model if request.model in ("", "default") else request.model
            return model in beat.models, len(files & set(beat.files))

        return max(idle, key=affinity)  # max keeps the first of equals

    async def _read_replies(self) -> None:
        while True:
            try:
                for entry in await self._streams.replies(BOT_CONSUMER, READ_BLOCK_MS):
                    await self._dispatch(entry)
                self._redis_up()
            except RedisError as error:
                self._redis_lost(error)
                await asyncio.sleep(RETRY_PAUSE_S)

    async def _dispatch(self, entry: Entry) -> None:
        try:
            reply = decode(entry.data)
            if not isinstance(reply, Result | Failure | Progress):
                raise MessageError(f"a {reply.TYPE} message on a reply stream")
        except MessageError as error:
            await self._streams.dead_letter(entry, str(error), BOT_GROUP)
            return
        if not self._replies.deliver(reply.batch_id, reply):
            log.debug(
                "ignoring a %s for batch %s: nothing waits for it", reply.TYPE, reply.batch_id
            )
        await self._streams.settle_reply(entry)

    def _redis_lost(self, error: Exception) -> None:
        if not self._redis_down:
            log.warning("Redis is unreachable (%s); retrying", error)
        self._redis_down = True

    def _redis_up(self) -> None:
        if self._redis_down:
            log.info("Redis is back")
        self._redis_down = False
