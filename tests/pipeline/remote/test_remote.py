"""Remote workers in one process against a real redis-server: the bot's registry and
`RemoteBackend` on one side, `BatchConsumer`s with fake backends on the other.

The worker processes themselves (the real engine, kill -9) are tested in
tests/bot/test_remote_workers.py; here each rule of the protocol is pinned down quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from pipeline.memory import Capacity, MemoryModel
from pipeline.queue import JobQueue
from pipeline.remote.consumer import BatchConsumer
from pipeline.remote.messages import Heartbeat, Result, encode
from pipeline.remote.registry import RemoteWorkers
from pipeline.remote.streams import DEAD, RESULTS, Streams, batches_key
from pipeline.request import GenerationRequest, LoraRef
from pipeline.worker import Worker
from tests.pipeline.fakes import FakeBackend, RecordingHooks
from tests.redis_server import RedisServer

HEARTBEAT_S = 0.2
LEASE_S = 2.0  # several heartbeats: a loaded CI machine must not look like a dead worker
BIG = 64 * 2**30


LORA_SHAS = {"fox": "f" * 64, "owl": "0" * 64}
"""The sha256 the bot's libraries would give each LoRA."""


def request(
    count: int = 1, model: str = "default", steps: int = 3, lora: str | None = None
) -> GenerationRequest:
    loras = (LoraRef(lora),) if lora else ()
    return GenerationRequest(
        "a fox", width=64, height=64, steps=steps, count=count, model=model, loras=loras
    )


def manifest(requests: Sequence[GenerationRequest]) -> dict[str, dict[str, str]]:
    """What `FileManifest` makes of the requests' LoRAs, with LORA_SHAS as the library."""
    named = {ref.name: LORA_SHAS[ref.name] for one in requests for ref in one.loras}
    return {"loras": named} if named else {}


@dataclass
class Fleet:
    """The bot's side (queue, hooks, registry) and the workers started on one Redis."""

    url: str
    queue: JobQueue
    hooks: RecordingHooks
    registry: RemoteWorkers
    streams: Streams
    consumers: dict[str, tuple[BatchConsumer, asyncio.Task[None]]] = field(default_factory=dict)

    async def add_worker(self, name: str, backend: FakeBackend, budget: int = BIG) -> None:
        consumer = BatchConsumer(
            await Streams.connect(self.url),
            backend,
            name,
            memory=MemoryModel,
            budget=lambda: budget,
            heartbeat_s=HEARTBEAT_S,
            lease_s=LEASE_S,
        )
        self.consumers[name] = (consumer, asyncio.create_task(consumer.run()))
        await wait_until(lambda: name in {beat.name for beat in self.registry.workers()})

    async def stop_worker(self, name: str) -> None:
        consumer, task = self.consumers.pop(name)
        consumer.stop()
        await asyncio.wait_for(task, 10)
        # Signed off: its loop ends once the registry has not heard of it for a lease.
        await wait_until(lambda: name not in {beat.name for beat in self.registry.workers()})


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not come true in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def fleet(redis_server: RedisServer) -> AsyncIterator[Fleet]:
    queue = JobQueue(max_queued_per_user=10, max_running_per_user=10)
    hooks = RecordingHooks()
    registry = RemoteWorkers(
        await Streams.connect(redis_server.url),
        queue,
        lambda backend, capacity, turn: Worker(queue, backend, capacity, hooks, wait_turn=turn),
        manifest,
        lease_s=LEASE_S,
        heartbeat_s=HEARTBEAT_S,
        stuck_after_s=60,
    )
    registry.start()
    fleet = Fleet(redis_server.url, queue, hooks, registry, await Streams.connect(redis_server.url))
    try:
        yield fleet
    finally:
        for name in list(fleet.consumers):
            with contextlib.suppress(Exception):
                await fleet.stop_worker(name)
        await registry.stop()
        await fleet.streams.close()


async def test_a_job_runs_on_a_remote_worker_and_is_delivered_once(fleet: Fleet) -> None:
    backend = FakeBackend()
    await fleet.add_worker("gpu-1", backend)
    fleet.queue.submit("j1", "u1", request(count=2))
    await fleet.hooks.settled(1)
    assert [image.task.index for image in fleet.hooks.done["j1"]] == [0, 1]
    assert fleet.hooks.done["j1"][0].parameters == "Seed: 0"  # read back from the PNG
    assert fleet.hooks.done_twice == []
    assert [len(batch) for batch in backend.batches] == [2]
    assert any(p.job_id == "j1" and p.step == p.total for p in fleet.hooks.progress)


async def test_out_of_memory_on_the_worker_splits_the_batch_in_the_bot(fleet: Fleet) -> None:
    backend = FakeBackend(oom_above=1)
    await fleet.add_worker("gpu-1", backend)
    fleet.queue.submit("j1", "u1", request(count=2))
    await fleet.hooks.settled(1)
    assert backend.sizes == [2, 1, 1]
    assert backend.memory_freed == 1  # on the worker, before it replied
    assert len(fleet.hooks.done["j1"]) == 2


async def test_a_job_cancelled_while_a_worker_runs_it_stops_there(fleet: Fleet) -> None:
    backend = FakeBackend()
    backend.release.clear()
    await fleet.add_worker("gpu-1", backend)
    fleet.queue.submit("j1", "u1", request())
    await asyncio.to_thread(backend.holding.wait, 10)
    assert await pending(fleet, "gpu-1") == 1
    fleet.queue.cancel("j1")
    # The worker sees the cancel key between steps, stops, replies and acknowledges.
    await wait_until_async(lambda: pending(fleet, "gpu-1"), 0)
    backend.release.set()
    fleet.queue.submit("j2", "u1", request())
    await fleet.hooks.settled(1)
    assert list(fleet.hooks.done) == ["j2"]
    assert [batch[0].job_id for batch in backend.batches] == ["j1", "j2"]


async def test_a_worker_with_a_small_memory_budget_gets_smaller_batches(fleet: Fleet) -> None:
    small, big = FakeBackend(), FakeBackend()
    await fleet.add_worker("small", small, budget=1)
    fleet.queue.submit("j1", "u1", request(count=3))
    await fleet.hooks.settled(1)
    await fleet.stop_worker("small")
    await fleet.add_worker("big", big)
    fleet.queue.submit("j2", "u1", request(count=3))
    await fleet.hooks.settled(2)
    assert small.sizes == [1, 1, 1]
    assert big.sizes == [3]
    expected = Capacity(MemoryModel(), lambda: BIG).max_batch(request())
    assert expected >= 3


async def test_batches_go_to_the_idle_worker_that_has_their_model_loaded(fleet: Fleet) -> None:
    first, second = FakeBackend(), FakeBackend()
    await fleet.add_worker("a", first)
    fleet.queue.submit("warm", "u1", request(model="anime"))
    await fleet.hooks.settled(1)  # "a" has loaded the model "anime" now
    await fleet.add_worker("b", second)
    await wait_until(lambda: "anime" in fleet.registry.workers()[0].models)
    fleet.queue.submit("plain", "u1", request())
    await fleet.hooks.settled(2)
    fleet.queue.submit("anime", "u1", request(model="anime"))
    await fleet.hooks.settled(3)
    assert [t.request.model for batch in first.batches for t in batch] == ["anime", "anime"]
    assert [t.request.model for batch in second.batches for t in batch] == ["default"]


async def test_batches_go_to_the_idle_worker_that_holds_their_lora_files(fleet: Fleet) -> None:
    holder, other = FakeBackend(), FakeBackend()
    await fleet.add_worker("holder", holder)
    await fleet.add_worker("other", other)
    fleet.queue.submit("warm", "u1", request(lora="fox"))  # "holder" has waited longest
    await fleet.hooks.settled(1)
    await wait_until(lambda: LORA_SHAS["fox"] in fleet.registry.workers()[0].files)
    # "other" has waited longest now: only the file it lacks sends the next fox job away.
    fleet.queue.submit("fox", "u1", request(lora="fox"))
    await fleet.hooks.settled(2)
    fleet.queue.submit("owl", "u1", request(lora="owl"))  # nobody holds it: the longest idle
    await fleet.hooks.settled(3)
    assert [t.job_id for batch in holder.batches for t in batch] == ["warm", "fox"]
    assert [t.job_id for batch in other.batches for t in batch] == ["owl"]


async def test_garbage_on_a_batch_stream_is_dead_lettered_and_the_worker_goes_on(
    fleet: Fleet,
) -> None:
    backend = FakeBackend()
    await fleet.add_worker("gpu-1", backend)
    client = fleet.streams.client
    await client.xadd(batches_key("gpu-1"), {b"m": b"not a message"})
    await client.xadd(batches_key("gpu-1"), {b"other": b"field"})
    fleet.queue.submit("j1", "u1", request())
    await fleet.hooks.settled(1)
    dead = await client.xrange(DEAD)
    assert [fields[b"m"] for _, fields in dead] == [b"not a message", b""]
    assert b"not JSON" in dead[0][1][b"error"]
    assert fleet.consumers["gpu-1"][1].done() is False


async def test_a_result_for_an_unknown_batch_is_ignored_and_garbage_dead_lettered(
    fleet: Fleet,
) -> None:
    backend = FakeBackend()
    await fleet.add_worker("gpu-1", backend)
    client = fleet.streams.client
    stray = Result("no-such-batch", "j1", 0, b"\x89PNG", 0, {}, None, "gpu-1")
    await client.xadd(RESULTS, {b"m": encode(stray)})
    await client.xadd(RESULTS, {b"m": b'{"v": 1, "type": "result"}'})
    fleet.queue.submit("j1", "u1", request())
    await fleet.hooks.settled(1)
    dead = await client.xrange(DEAD)
    assert len(dead) == 1 and b"missing fields" in dead[0][1][b"error"]
    assert list(fleet.hooks.done) == ["j1"] and fleet.hooks.failed == {}
    assert await client.xlen(RESULTS) == 1  # handled replies are deleted; the garbage stays


async def test_a_silent_workers_batch_is_reclaimed_and_runs_elsewhere(fleet: Fleet) -> None:
    # A worker that took its batch and died: one heartbeat, then nothing, the batch pending.
    ghost = Heartbeat(
        "ghost", "cuda", "RTX", MemoryModel(), BIG, "default", (), (), "idle", None, 0.0, 0.0
    )
    await fleet.streams.beat(ghost, LEASE_S)
    await wait_until(lambda: [beat.name for beat in fleet.registry.workers()] == ["ghost"])
    fleet.queue.submit("j1", "u1", request())
    taken = None
    while taken is None:
        taken = await fleet.streams.next_batch("ghost", 1000)
    healthy = FakeBackend()
    await fleet.add_worker("healthy", healthy)
    await fleet.hooks.settled(1, timeout_s=10)
    assert [[task.job_id for task in batch] for batch in healthy.batches] == [["j1"]]
    assert fleet.hooks.done_twice == []
    assert await pending(fleet, "ghost") == 0  # taken back with XAUTOCLAIM
    assert await fleet.streams.client.xlen(batches_key("ghost")) == 0
    assert [beat.name for beat in fleet.registry.workers()] == ["healthy"]


async def pending(fleet: Fleet, worker: str) -> int:
    summary = await fleet.streams.client.xpending(batches_key(worker), "workers")
    return int(summary["pending"])


async def wait_until_async(
    value: Callable[[], Awaitable[int]], expected: int, timeout_s: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while await value() != expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {await value()}, not {expected}")
        await asyncio.sleep(0.02)
