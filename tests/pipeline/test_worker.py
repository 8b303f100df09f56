import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator

import pytest

from pipeline.memory import GIB, Capacity, MemoryModel, fixed_budget
from pipeline.queue import JobQueue, JobState
from pipeline.request import GenerationRequest
from pipeline.worker import CRASHED, FAILED, TOO_LARGE, Worker
from tests.pipeline.fakes import FakeBackend, RecordingHooks

BASE = GenerationRequest(prompt="a fox", steps=5)


@dataclasses.dataclass
class Rig:
    queue: JobQueue
    backend: FakeBackend
    capacity: Capacity
    hooks: RecordingHooks
    worker: Worker


def build(backend: FakeBackend | None = None, **worker_options) -> Rig:
    queue = JobQueue(max_queued_per_user=10, max_running_per_user=10)
    backend = backend or FakeBackend()
    capacity = Capacity(MemoryModel(), fixed_budget(40 * GIB))
    hooks = RecordingHooks()
    options = {"max_batch": 4, "stop_timeout_s": 2.0, **worker_options}
    worker = Worker(queue, backend, capacity, hooks, **options)
    return Rig(queue, backend, capacity, hooks, worker)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = build()
    rig.worker.start()
    yield rig
    await rig.worker.stop()


async def wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_compatible_jobs_share_a_batch_and_each_gets_its_images(rig: Rig) -> None:
    rig.backend.release.clear()  # hold the first batch so the others queue up behind it
    rig.queue.submit("first", "u0", dataclasses.replace(BASE, steps=3))
    await wait_until(rig.backend.holding.is_set)
    for user in "abc":
        rig.queue.submit(user, user, dataclasses.replace(BASE, count=2))
    rig.backend.release.set()
    await rig.hooks.settled(4)
    assert rig.backend.sizes == [1, 4, 2]
    assert [r.task.index for r in rig.hooks.done["c"]] == [0, 1]
    assert set(rig.hooks.started) == {"first", "a", "b", "c"}
    assert rig.backend.threads == {next(iter(rig.backend.threads))}
    assert rig.hooks.done_twice == []


async def test_a_job_split_across_batches_is_delivered_once_with_all_images(rig: Rig) -> None:
    rig.queue.submit("big", "a", dataclasses.replace(BASE, count=10))
    await rig.hooks.settled(1)
    assert rig.backend.sizes == [4, 4, 2]
    assert [r.task.index for r in rig.hooks.done["big"]] == list(range(10))
    assert rig.hooks.started == ["big"]


async def test_out_of_memory_splits_the_batch_and_lowers_the_capacity() -> None:
    rig = build(FakeBackend(oom_above=2))
    rig.worker.start()
    rig.queue.submit("a", "a", dataclasses.replace(BASE, count=4))
    await rig.hooks.settled(1)
    assert rig.backend.sizes == [4, 2, 2]
    assert len(rig.hooks.done["a"]) == 4
    assert rig.capacity.max_batch(BASE) == 2
    rig.queue.submit("b", "b", dataclasses.replace(BASE, count=4))
    await rig.hooks.settled(2)
    assert rig.backend.sizes[3:] == [2, 2]
    await rig.worker.stop()


async def test_one_image_that_does_not_fit_fails_its_job_and_the_worker_goes_on() -> None:
    backend = FakeBackend(oom_if=lambda tasks: tasks[0].request.width > 1024)
    rig = build(backend)
    rig.worker.start()
    rig.queue.submit("huge", "a", dataclasses.replace(BASE, width=2048, height=2048, count=2))
    rig.queue.submit("fine", "b", BASE)
    await rig.hooks.settled(2)
    assert rig.hooks.failed == {"huge": TOO_LARGE}
    assert "smaller size" in TOO_LARGE
    assert len(rig.hooks.done["fine"]) == 1
    assert rig.queue.unfinished() == []
    await rig.worker.stop()


async def test_a_backend_bug_fails_the_batch_jobs_and_the_worker_goes_on() -> None:
    rig = build(FakeBackend(error=RuntimeError("boom")))
    rig.worker.start()
    rig.queue.submit("a", "a", BASE)
    await rig.hooks.settled(1)
    assert rig.hooks.failed == {"a": FAILED}
    rig.backend.error = None
    rig.queue.submit("b", "b", BASE)
    await rig.hooks.settled(2)
    assert "b" in rig.hooks.done
    await rig.worker.stop()


async def test_cancelling_a_queued_job_means_it_never_runs(rig: Rig) -> None:
    rig.backend.release.clear()
    rig.queue.submit("a", "a", BASE)
    await wait_until(rig.backend.holding.is_set)
    rig.queue.submit("b", "b", dataclasses.replace(BASE, steps=6))
    rig.queue.cancel("b")
    rig.backend.release.set()
    await rig.hooks.settled(1)
    await asyncio.sleep(0.05)
    assert [task.job_id for batch in rig.backend.batches for task in batch] == ["a"]
    assert "b" not in rig.hooks.failed


async def test_cancelling_the_running_job_interrupts_its_batch(rig: Rig) -> None:
    rig.backend.release.clear()
    rig.queue.submit("a", "a", BASE)
    rig.queue.submit("b", "b", dataclasses.replace(BASE, steps=6))
    await wait_until(rig.backend.holding.is_set)
    rig.queue.cancel("a")  # the fake never releases: only the interrupt ends the batch
    await wait_until(lambda: len(rig.backend.batches) == 2)
    rig.backend.release.set()
    await rig.hooks.settled(1)
    assert list(rig.hooks.done) == ["b"]


async def test_cancelling_one_job_of_a_shared_batch_lets_the_others_finish(rig: Rig) -> None:
    rig.backend.release.clear()
    rig.queue.submit("a", "a", BASE)
    rig.queue.submit("b", "b", BASE)
    await wait_until(rig.backend.holding.is_set)
    rig.queue.cancel("a")
    rig.backend.release.set()
    await rig.hooks.settled(1)
    assert rig.backend.sizes == [2]
    assert list(rig.hooks.done) == ["b"]


async def test_stop_interrupts_the_running_batch_and_puts_its_images_back() -> None:
    rig = build()
    rig.worker.start()
    rig.backend.release.clear()
    job = rig.queue.submit("a", "a", dataclasses.replace(BASE, count=2))
    await wait_until(rig.backend.holding.is_set)
    started = time.monotonic()
    await rig.worker.stop()
    assert time.monotonic() - started < 1.0
    assert job.state is JobState.RUNNING and job.pending == [0, 1]
    assert rig.queue.unfinished() == [job]
    assert rig.hooks.done == {} and rig.hooks.failed == {}
    assert not any(t.name.startswith("dreamcord-model") for t in threading.enumerate())


async def test_stop_when_idle_returns_at_once() -> None:
    rig = build()
    rig.worker.start()
    await asyncio.sleep(0.01)
    await asyncio.wait_for(rig.worker.stop(), timeout=1.0)


async def test_progress_reports_every_step_with_previews_only_when_wanted() -> None:
    rig = build(preview_interval_s=60.0)
    rig.worker.start()
    rig.worker.want_previews("watched")
    rig.queue.submit("watched", "a", BASE)
    rig.queue.submit("plain", "b", BASE)
    await rig.hooks.settled(2)
    await asyncio.sleep(0.01)  # let the last call_soon_threadsafe callbacks run
    steps = [(p.job_id, p.step) for p in rig.hooks.progress]
    assert steps.count(("watched", 5)) == 1 and steps.count(("plain", 5)) == 1
    previews = [p.job_id for p in rig.hooks.progress if p.preview is not None]
    assert previews == ["watched"]  # throttled to one per 60 s
    await rig.worker.stop()


async def test_the_event_loop_keeps_ticking_while_a_batch_runs() -> None:
    rig = build(FakeBackend(step_s=0.05))
    rig.worker.start()
    rig.queue.submit("a", "a", dataclasses.replace(BASE, steps=12, count=4))
    worst = 0.0
    while not rig.hooks.done:
        before = time.perf_counter()
        await asyncio.sleep(0.05)
        worst = max(worst, time.perf_counter() - before - 0.05)
    assert worst < 0.25
    await rig.worker.stop()


async def test_call_runs_on_the_model_thread(rig: Rig) -> None:
    name = await rig.worker.call(lambda: threading.current_thread().name)
    assert name.startswith("dreamcord-model")


@pytest.mark.slow
async def test_the_worker_drives_the_real_tiny_engine() -> None:
    from tests.pipeline.engine_helpers import SMALL, tiny_engine

    queue = JobQueue(max_queued_per_user=4, max_running_per_user=4)
    capacity = Capacity(MemoryModel(), fixed_budget(8 * GIB))
    hooks = RecordingHooks()
    worker = Worker(queue, tiny_engine(), capacity, hooks, max_batch=4)
    worker.want_previews("a")
    worker.start()
    queue.submit("a", "a", SMALL)
    queue.submit("b", "b", dataclasses.replace(SMALL, seed=7, count=2))
    await hooks.settled(2, timeout_s=120)
    await worker.stop()
    assert hooks.failed == {}
    assert [r.task.seed for r in hooks.done["b"]] == [7, 8]
    assert all(r.image.size == (64, 64) for r in hooks.done["a"] + hooks.done["b"])
    assert any(p.job_id == "a" and p.preview is not None for p in hooks.progress)
    assert {p.total for p in hooks.progress} == {SMALL.steps}


class StartBug(RecordingHooks):
    """Hooks with a bug: `on_job_started` raises for the jobs named in `raise_for`, once each."""

    def __init__(self, *raise_for: str) -> None:
        super().__init__()
        self.raise_for = set(raise_for)

    def on_job_started(self, job) -> None:
        super().on_job_started(job)
        if job.job_id in self.raise_for:
            self.raise_for.discard(job.job_id)
            raise RuntimeError(f"bug while starting {job.job_id}")


async def test_a_bug_in_the_worker_loop_requeues_the_batch_and_the_worker_serves_on() -> None:
    queue = JobQueue(max_queued_per_user=10, max_running_per_user=10)
    hooks = StartBug("a")
    capacity = Capacity(MemoryModel(), fixed_budget(40 * GIB))
    worker = Worker(queue, FakeBackend(), capacity, hooks, max_batch=4, stop_timeout_s=2.0)
    worker.start()
    queue.submit("a", "a", BASE)
    await hooks.settled(1)
    queue.submit("b", "b", BASE)
    await hooks.settled(2)
    await worker.stop()
    assert set(hooks.done) == {"a", "b"} and hooks.failed == {}


class Recording:
    """The real engine, recording the size of every batch it is asked to run."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.sizes: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def run(self, tasks, on_step, should_stop):
        self.sizes.append(len(tasks))
        return self.engine.run(tasks, on_step, should_stop)


def nan_embedding_engine(folder):
    """The tiny engine with one library embedding, `bad-emb`, whose file holds NaNs."""
    import torch

    from pipeline.lora.cache import AdapterCache
    from pipeline.lora.source import AdapterSource
    from tests.pipeline.engine_helpers import tiny_engine
    from tests.pipeline.lora import make_files as mf
    from tests.pipeline.test_engine_loras import Files

    path = mf.write(folder / "bad-emb.safetensors", {"emb_params": torch.full((2, 32), torch.nan)})
    engine = tiny_engine()
    engine.adapters = AdapterSource(Files({}), Files({"bad-emb": path}), AdapterCache(2**20))
    return engine


async def test_one_jobs_bad_embedding_fails_only_that_job_of_a_shared_batch(tmp_path) -> None:
    from tests.pipeline.engine_helpers import SMALL

    queue = JobQueue(max_queued_per_user=4, max_running_per_user=4)
    capacity = Capacity(MemoryModel(), fixed_budget(8 * GIB))
    hooks = RecordingHooks()
    engine = Recording(nan_embedding_engine(tmp_path))
    worker = Worker(queue, engine, capacity, hooks, max_batch=4)
    queue.submit("bad", "a", dataclasses.replace(SMALL, prompt="a fox, bad-emb"))
    queue.submit("good", "b", dataclasses.replace(SMALL, count=2))
    worker.start()
    await hooks.settled(2, timeout_s=120)
    await worker.stop()
    assert engine.sizes[0] == 3  # they did share a batch
    assert list(hooks.failed) == ["bad"] and "NaN" in hooks.failed["bad"]
    assert [r.task.index for r in hooks.done["good"]] == [0, 1]


@pytest.mark.slow
async def test_the_retry_after_out_of_memory_starts_once_the_failed_attempt_is_freed() -> None:
    """The failed attempt's tensors live in its frames, which the error's traceback holds."""
    import weakref

    import torch

    from tests.pipeline.engine_helpers import SMALL, tiny_engine

    engine = tiny_engine()
    attempts: list[weakref.ref] = []
    alive_at_retry: list[bool] = []

    def fail_the_first_attempt(_module, _args) -> None:
        if not attempts:
            activations = torch.ones(256, 1024)  # what a real attempt holds when it runs out
            attempts.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        alive_at_retry.append(attempts[0]() is not None)

    engine.models.get("tiny").pipe.unet.register_forward_pre_hook(fail_the_first_attempt)
    queue = JobQueue(max_queued_per_user=4, max_running_per_user=4)
    hooks = RecordingHooks()
    worker = Worker(queue, engine, Capacity(MemoryModel(), fixed_budget(8 * GIB)), hooks)
    worker.start()
    queue.submit("a", "a", dataclasses.replace(SMALL, count=2))
    await hooks.settled(1, timeout_s=120)
    await worker.stop()
    assert len(hooks.done["a"]) == 2
    assert alive_at_retry and alive_at_retry[0] is False


class ForgetfulCapacity(Capacity):
    """A memory model with a bug in what it learns from an out-of-memory batch."""

    def record_out_of_memory(self, request: GenerationRequest, batch_size: int) -> None:
        raise RuntimeError("bug in the memory model")


async def test_a_batch_caught_in_two_loop_crashes_fails_with_a_message_and_others_run() -> None:
    queue = JobQueue(max_queued_per_user=10, max_running_per_user=10)
    hooks = RecordingHooks()
    capacity = ForgetfulCapacity(MemoryModel(), fixed_budget(40 * GIB))
    backend = FakeBackend(oom_above=1)
    worker = Worker(queue, backend, capacity, hooks, restart_backoff_s=0.0)
    worker.start()
    queue.submit("a", "a", dataclasses.replace(BASE, count=2))
    await hooks.settled(1)
    queue.submit("b", "b", BASE)
    await hooks.settled(2)
    health = worker.health()
    await worker.stop()
    assert hooks.failed == {"a": CRASHED} and "b" in hooks.done
    assert backend.sizes == [2, 2, 1]
    assert health.alive and health.restarts == 2
    assert health.last_error == "RuntimeError: bug in the memory model"


async def test_a_loop_that_keeps_crashing_stops_and_says_it_is_dead() -> None:
    class BrokenCapacity(Capacity):
        def max_batch(self, request: GenerationRequest) -> int:
            raise ZeroDivisionError("bug in the memory model")

    queue = JobQueue(max_queued_per_user=10, max_running_per_user=10)
    capacity = BrokenCapacity(MemoryModel(), fixed_budget(40 * GIB))
    worker = Worker(queue, FakeBackend(), capacity, RecordingHooks(), restart_backoff_s=0.0)
    assert not worker.health().alive  # not started yet
    worker.start()
    assert worker.health().alive
    queue.submit("a", "a", BASE)
    await wait_until(lambda: not worker.health().alive)
    health = worker.health()
    await worker.stop()
    assert health.restarts == 4 and "memory model" in (health.last_error or "")
    assert "stopped (last error: ZeroDivisionError: bug in the memory model)" in health.describe(0)
    assert queue.get("a") is not None  # it stays queued: a restart of the bot runs it


async def test_health_shows_a_busy_batch_and_calls_it_stuck_without_progress() -> None:
    now = [1000.0]
    rig = build(clock=lambda: now[0], stuck_after_s=300.0)
    rig.worker.start()
    assert rig.worker.health().describe(now[0]) == "idle"
    rig.backend.release.clear()  # the batch waits before its first step, as a hung call would
    rig.queue.submit("a", "a", BASE)
    await wait_until(rig.backend.holding.is_set)
    now[0] += 200
    health = rig.worker.health()
    assert health.busy_since == 1000.0 and health.last_step_at is None
    assert health.ok(now[0]) and health.describe(now[0]).startswith("busy for 200 s")
    now[0] += 101
    health = rig.worker.health()
    assert health.stuck(now[0]) and not health.ok(now[0])
    assert health.describe(now[0]).startswith("stuck: no progress for 301 s (limit 300 s)")
    rig.backend.release.set()
    await rig.hooks.settled(1)
    assert rig.worker.health().last_step_at == now[0]
    assert rig.worker.health().busy_since is None
    await rig.worker.stop()
