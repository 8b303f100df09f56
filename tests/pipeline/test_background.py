"""Background work in the real worker beside the real tiny engine: image jobs first, memory held
back from batches, pause, resume, cancel, one work at a time."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest

from pipeline.background import BackgroundState
from pipeline.engine import Engine
from pipeline.memory import Capacity, MemoryModel, fixed_budget
from pipeline.queue import JobQueue
from tests.pipeline.engine_helpers import SMALL, tiny_engine
from tests.pipeline.fakes import RecordingHooks

RESERVED = 10**9
IMAGE_BYTES = 10**8
# One image costs IMAGE_BYTES per pixel-batch at SMALL's size; the budget fits four with no
# training and one while the work holds RESERVED.
MODEL = MemoryModel(
    fixed_bytes=0,
    image_bytes_per_pixel=IMAGE_BYTES / (SMALL.width * SMALL.height),
    decode_bytes_per_pixel=0,
)
BUDGET = 4 * IMAGE_BYTES + RESERVED // 2


class Events:
    """What happened on the model thread, in the order it happened (one thread: a true order)."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.lock = threading.Lock()

    def add(self, event: str) -> None:
        with self.lock:
            self.log.append(event)


class CountingWork:
    """A background work of `steps` steps that logs each one and holds RESERVED bytes."""

    def __init__(self, name: str, events: Events, steps: int = 6) -> None:
        self.name = name
        self.events = events
        self.steps = steps
        self.done_steps = 0
        self.closed = False
        self.thread = ""
        events.add(f"{name} built")

    @property
    def finished(self) -> bool:
        return self.done_steps >= self.steps

    @property
    def reserved_bytes(self) -> int:
        return 0 if self.closed else RESERVED

    def step(self) -> int:
        self.thread = threading.current_thread().name
        self.done_steps += 1
        self.events.add(f"{self.name} step {self.done_steps}")
        return self.done_steps

    def close(self) -> None:
        self.closed = True
        self.events.add(f"{self.name} closed")


class LoggedEngine:
    """The tiny engine, logging the end of each batch with its size on the model thread."""

    def __init__(self, engine: Engine, events: Events) -> None:
        self.engine = engine
        self.events = events

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def run(self, tasks, on_step, should_stop):
        results = self.engine.run(tasks, on_step, should_stop)
        self.events.add(f"batch {tasks[0].job_id} x{len(tasks)}")
        return results


@dataclasses.dataclass
class Rig:
    events: Events
    queue: JobQueue
    capacity: Capacity
    hooks: RecordingHooks
    worker: object


@pytest.fixture(scope="module")
def engine() -> Engine:
    return tiny_engine()


@pytest.fixture
async def rig(engine: Engine):
    from pipeline.worker import Worker

    events = Events()
    queue = JobQueue(max_queued_per_user=4, max_running_per_user=4)
    capacity = Capacity(MODEL, fixed_budget(BUDGET))
    hooks = RecordingHooks()
    worker = Worker(queue, LoggedEngine(engine, events), capacity, hooks, max_batch=4)
    worker.start()
    yield Rig(events, queue, capacity, hooks, worker)
    await worker.stop()


async def test_an_image_job_submitted_mid_training_runs_before_the_next_step(rig: Rig) -> None:
    works: list[CountingWork] = []

    def start() -> CountingWork:
        works.append(CountingWork("train", rig.events))
        return works[-1]

    def on_step(step: object) -> None:
        if step == 2:
            rig.queue.submit("image", "u1", SMALL)

    ticket = rig.worker.background.add("run", start, on_step)
    assert await asyncio.wait_for(ticket.ended, 120) is BackgroundState.DONE
    await rig.hooks.settled(1, timeout_s=60)
    assert rig.events.log == [
        "train built",
        "train step 1",
        "train step 2",
        "batch image x1",
        *(f"train step {n}" for n in range(3, 7)),
        "train closed",
    ]
    assert works[0].thread.startswith("dreamcord-model")
    assert rig.hooks.failed == {}


async def test_batches_are_sized_without_the_memory_training_holds(rig: Rig) -> None:
    four = dataclasses.replace(SMALL, count=4)
    assert rig.capacity.max_batch(four) >= 4
    sizes: list[int] = []
    paused = asyncio.Event()

    def on_step(step: object) -> None:
        sizes.append(rig.capacity.max_batch(four))
        if step == 1:
            rig.worker.background.pause("run")
            rig.queue.submit("four", "u1", four)
            paused.set()

    ticket = rig.worker.background.add(
        "run", lambda: CountingWork("train", rig.events, steps=2), on_step
    )
    await paused.wait()
    await rig.hooks.settled(1, timeout_s=60)
    # Paused, the work still holds its memory: the four images ran one per batch.
    assert rig.events.log.count("batch four x1") == 4
    assert rig.capacity.reserved_bytes == RESERVED
    rig.worker.background.pause("run", False)
    assert await asyncio.wait_for(ticket.ended, 60) is BackgroundState.DONE
    assert sizes == [1, 1]
    assert rig.capacity.reserved_bytes == 0
    assert rig.capacity.max_batch(four) >= 4


async def test_a_paused_work_takes_no_step_until_resumed(rig: Rig) -> None:
    steps: list[object] = []
    first = asyncio.Event()

    def on_step(step: object) -> None:
        steps.append(step)
        if step == 1:
            rig.worker.background.pause("run")
            first.set()

    ticket = rig.worker.background.add(
        "run", lambda: CountingWork("train", rig.events, steps=3), on_step
    )
    await first.wait()
    assert ticket.state is BackgroundState.PAUSED
    # An image job passes while paused, and still no step follows it.
    rig.queue.submit("image", "u1", SMALL)
    await rig.hooks.settled(1, timeout_s=60)
    assert steps == [1]
    rig.worker.background.pause("run", False)
    assert await asyncio.wait_for(ticket.ended, 60) is BackgroundState.DONE
    assert steps == [1, 2, 3]


async def test_cancel_closes_the_work_and_the_next_one_starts_only_then(rig: Rig) -> None:
    def on_step(step: object) -> None:
        if step == 2:
            rig.worker.background.cancel("first")

    first = rig.worker.background.add(
        "first", lambda: CountingWork("first", rig.events, steps=100), on_step
    )
    second = rig.worker.background.add(
        "second", lambda: CountingWork("second", rig.events, steps=1), lambda _step: None
    )
    assert await asyncio.wait_for(first.ended, 60) is BackgroundState.CANCELLED
    assert await asyncio.wait_for(second.ended, 60) is BackgroundState.DONE
    assert rig.events.log == [
        "first built",
        "first step 1",
        "first step 2",
        "first closed",
        "second built",
        "second step 1",
        "second closed",
    ]
    assert rig.capacity.reserved_bytes == 0


async def test_a_work_that_fails_is_closed_and_says_why(rig: Rig) -> None:
    class Broken(CountingWork):
        def step(self) -> int:
            raise RuntimeError("the trainer broke")

    ticket = rig.worker.background.add("run", lambda: Broken("broken", rig.events), print)
    assert await asyncio.wait_for(ticket.ended, 60) is BackgroundState.FAILED
    assert str(ticket.error) == "the trainer broke"
    assert rig.events.log == ["broken built", "broken closed"]
    # The worker serves on.
    rig.queue.submit("image", "u1", SMALL)
    await rig.hooks.settled(1, timeout_s=60)
    assert rig.hooks.failed == {}


class LoggedTraining:
    """The real TrainingWork over the real trainer, logging each piece on the model thread."""

    def __init__(self, work, events: Events) -> None:
        self.work = work
        self.events = events

    @property
    def finished(self) -> bool:
        return self.work.finished

    @property
    def reserved_bytes(self) -> int:
        return self.work.reserved_bytes

    def step(self):
        event = self.work.step()
        self.events.add(type(event).__name__ + f" {getattr(event, 'step', '')}".rstrip())
        return event

    def close(self) -> None:
        self.work.close()


@pytest.mark.slow
async def test_the_real_trainer_yields_to_an_image_job_between_two_steps(
    rig: Rig, engine: Engine, tmp_path
) -> None:
    from pipeline.training.dataset import open_dataset
    from pipeline.training.plan import TrainingOptions, plan_training
    from pipeline.training_work import TrainingProgress, start_training
    from tests.pipeline.training.pictures import training_set, write_folder

    pictures = write_folder(tmp_path / "pictures", training_set(2))
    options = TrainingOptions.for_preset("fox", steps=4, rank=4, alpha=2, resolution=256)
    plan = plan_training(open_dataset(pictures, tmp_path / "unused"), options)

    def start() -> LoggedTraining:
        work = start_training(engine, plan, tmp_path / "run", tmp_path / "fox.safetensors", 1)
        return LoggedTraining(work, rig.events)

    def on_step(event: object) -> None:
        if isinstance(event, TrainingProgress) and event.step == 2:
            assert rig.capacity.reserved_bytes > 0  # the trainer's copies, held from batches
            rig.queue.submit("image", "u1", SMALL)

    ticket = rig.worker.background.add("fox", start, on_step)
    assert await asyncio.wait_for(ticket.ended, 300) is BackgroundState.DONE
    # Two pictures with two repeats: one epoch of four steps, its samples, then the export.
    assert rig.events.log == [
        "TrainingProgress 1",
        "TrainingProgress 2",
        "batch image x1",
        "TrainingProgress 3",
        "TrainingProgress 4",
        "TrainingSamples",
        "TrainingExported",
    ]
    assert (tmp_path / "fox.safetensors").stat().st_size > 0
    assert rig.capacity.reserved_bytes == 0


async def test_health_says_training_while_only_training_runs(rig: Rig) -> None:
    """/status shows the worker's health line: not "idle" while a training run takes steps."""
    lines: list[str] = []

    def on_step(step: object) -> None:
        lines.append(rig.worker.health().describe(time.time()))

    ticket = rig.worker.background.add(
        "run", lambda: CountingWork("train", rig.events, steps=2), on_step
    )
    assert await asyncio.wait_for(ticket.ended, 60) is BackgroundState.DONE
    assert lines == ["training", "training"]
    assert rig.worker.health().describe(time.time()) == "idle"
