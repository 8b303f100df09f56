"""The job service on a real database with a fake backend: store, deliver, recover."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as settings_for_fuzz
from hypothesis import strategies as st

from bot.container import Services, open_services
from bot.jobs import MAX_DELIVERY_ATTEMPTS, RESTART_FAILURE, STORE_FAILED, Origin
from bot.settings import Settings, load_settings
from data.jobs import JobState
from pipeline.errors import UserError
from pipeline.request import GenerationRequest
from tests.pipeline.fakes import FakeBackend

REQUEST = GenerationRequest("a fox", width=64, height=64, steps=3, seed=5, count=2)
ALICE, BOB = Origin(user_id=1, channel_id=10), Origin(user_id=2, channel_id=10)


class RecordingDelivery:
    def __init__(self) -> None:
        self.delivered: list[tuple[str, int]] = []
        self.failures: list[tuple[str, str]] = []
        self.steps: list[tuple[str, int]] = []

    def progress(self, job, step, total, preview) -> None:
        self.steps.append((job.id, step))

    async def deliver(self, job, generation) -> None:
        self.delivered.append((job.id, generation.id))

    async def report_failure(self, job, message: str) -> None:
        self.failures.append((job.id, message))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=tmp_path / "data", max_queued_per_user=2)


async def start(settings: Settings, backend: FakeBackend, delivery: RecordingDelivery) -> Services:
    return await open_services(settings, delivery, backend=backend)


@pytest.fixture
async def running(
    settings: Settings,
) -> AsyncIterator[tuple[Services, RecordingDelivery, FakeBackend]]:
    delivery, backend = RecordingDelivery(), FakeBackend()
    services = await start(settings, backend, delivery)
    yield services, delivery, backend
    backend.release.set()
    await services.close()


async def test_a_job_is_stored_run_written_and_delivered_once(running) -> None:
    services, delivery, _ = running
    ticket = await services.app.jobs.submit(REQUEST, ALICE)
    job = await services.app.jobs.wait(ticket.job_id)
    assert job.state is JobState.DONE and job.delivered_at is not None
    generation = await services.repos.generations.for_job(job.id)
    assert generation is not None
    assert [image.seed for image in generation.images] == [5, 6]
    for image in generation.images:
        assert (services.images.root / image.path).read_bytes().startswith(b"\x89PNG")
    assert delivery.delivered == [(job.id, generation.id)]
    assert (job.id, 3) in delivery.steps


async def test_the_queue_cap_refuses_before_anything_is_stored(running) -> None:
    services, _, backend = running
    backend.release.clear()  # the first job holds the worker; the rest wait
    for _ in range(3):  # one runs, two wait
        await services.app.jobs.submit(REQUEST, ALICE)
    with pytest.raises(UserError, match="you already have 2 jobs waiting"):
        await services.app.jobs.submit(REQUEST, ALICE)
    assert len(await services.repos.jobs.list_queued()) + 1 == 3
    await services.app.jobs.submit(REQUEST, BOB)  # others are not affected


async def test_cancel_is_for_the_owner_or_an_admin(running) -> None:
    services, delivery, backend = running
    backend.release.clear()
    await services.app.jobs.submit(REQUEST, ALICE)
    waiting = await services.app.jobs.submit(REQUEST, ALICE)
    with pytest.raises(UserError, match="only the person who asked"):
        await services.app.jobs.cancel(waiting.job_id, BOB.user_id)
    assert await services.app.jobs.cancel(waiting.job_id, ALICE.user_id) == "removed from the queue"
    assert (waiting.job_id, "cancelled") in delivery.failures
    stored = await services.repos.jobs.get(waiting.job_id)
    assert stored is not None and stored.state is JobState.CANCELLED


async def test_a_restart_mid_batch_loses_nothing(settings: Settings) -> None:
    """Crash while a batch runs: rows say running; the next start retries it and delivers."""
    held = FakeBackend()
    held.release.clear()
    first = await start(settings, held, RecordingDelivery())
    running_job = await first.app.jobs.submit(REQUEST, ALICE)
    waiting_job = await first.app.jobs.submit(REQUEST, BOB)
    await asyncio.to_thread(held.holding.wait, 5)
    await asyncio.sleep(0.05)  # let mark_running land
    await first.db.close()  # the crash: the database is left as it was, the worker abandoned
    held.release.set()

    delivery = RecordingDelivery()
    second = await start(settings, FakeBackend(), delivery)
    try:
        for ticket in (running_job, waiting_job):
            job = await second.app.jobs.wait(ticket.job_id)
            assert job.state is JobState.DONE, job
        assert sorted(job_id for job_id, _ in delivery.delivered) == sorted(
            [running_job.job_id, waiting_job.job_id]
        )
        retried = await second.repos.jobs.get(running_job.job_id)
        assert retried is not None and retried.attempts == 2
    finally:
        await second.close()
        await first.app.jobs.worker.stop()


async def test_a_job_interrupted_twice_fails_with_a_message(settings: Settings) -> None:
    for _ in range(2):
        held = FakeBackend()
        held.release.clear()
        services = await start(settings, held, RecordingDelivery())
        if not await services.repos.jobs.jobs_in_state(JobState.QUEUED):
            await services.app.jobs.submit(REQUEST, ALICE)
        await asyncio.to_thread(held.holding.wait, 5)
        await asyncio.sleep(0.05)
        await services.db.close()
        held.release.set()
        await services.app.jobs.worker.stop()
    delivery = RecordingDelivery()
    final = await start(settings, FakeBackend(), delivery)
    try:
        [failed] = await final.repos.jobs.jobs_in_state(JobState.FAILED)
        assert failed.error == RESTART_FAILURE
        assert delivery.failures == [(failed.id, RESTART_FAILURE)]
    finally:
        await final.close()


async def test_an_undelivered_result_is_posted_at_the_next_start_and_only_once(
    settings: Settings,
) -> None:
    class Offline(RecordingDelivery):
        async def deliver(self, job, generation) -> None:
            raise ConnectionError("Discord is down")

    first = await start(settings, FakeBackend(), Offline())
    ticket = await first.app.jobs.submit(REQUEST, ALICE)
    job = await first.app.jobs.wait(ticket.job_id)
    assert job.state is JobState.DONE and job.delivered_at is None
    await first.close()

    for expected in (1, 0):
        delivery = RecordingDelivery()
        services = await start(settings, FakeBackend(), delivery)
        await services.close()
        assert len(delivery.delivered) == expected


async def submit_at_once(services: Services, origin: Origin, count: int) -> list[object]:
    """`count` submissions of one user, all in flight together (a double-clicking user)."""
    submits = (services.app.jobs.submit(REQUEST, origin) for _ in range(count))
    return await asyncio.gather(*submits, return_exceptions=True)


async def race_the_cap(root: Path, cap: int, count: int) -> None:
    """Concurrent submits against a cap, then a crash and a restart: exactly the cap is kept."""
    settings = load_settings(None, data_dir=root, max_queued_per_user=cap)
    held = FakeBackend()
    held.release.clear()
    first = await start(settings, held, RecordingDelivery())
    busy = await first.app.jobs.submit(REQUEST, BOB)  # holds the worker: Alice's jobs all wait
    await asyncio.to_thread(held.holding.wait, 5)
    outcomes = await submit_at_once(first, ALICE, count)
    accepted = {o.job_id for o in outcomes if not isinstance(o, BaseException)}
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(accepted) == min(cap, count)
    assert all(isinstance(o, UserError) and "jobs waiting" in str(o) for o in refused), refused
    await first.db.close()  # crash
    held.release.set()
    await first.app.jobs.worker.stop()

    delivery = RecordingDelivery()
    second = await start(settings, FakeBackend(), delivery)
    try:
        for job_id in [*accepted, busy.job_id]:
            await second.app.jobs.wait(job_id)
        rows = await second.repos.jobs.jobs_in_state(JobState.DONE)
        assert {row.id for row in rows if row.user_id == ALICE.user_id} == accepted
        assert {job_id for job_id, _ in delivery.delivered} == accepted | {busy.job_id}
    finally:
        await second.close()


async def test_concurrent_submits_of_one_user_keep_the_cap_and_refused_ones_never_run(
    tmp_path: Path,
) -> None:
    await race_the_cap(tmp_path / "data", cap=3, count=12)


@settings_for_fuzz(max_examples=6, deadline=None)
@given(cap=st.integers(1, 4), count=st.integers(1, 9))
def test_the_cap_holds_for_any_number_of_concurrent_submits(cap: int, count: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(race_the_cap(Path(root) / "data", cap, count))


async def test_an_undeliverable_result_is_tried_a_few_times_then_the_user_is_told_once(
    settings: Settings,
) -> None:
    class Offline(RecordingDelivery):
        async def deliver(self, job, generation) -> None:
            self.delivered.append((job.id, generation.id))
            raise ConnectionError("the result message is refused")

    delivery = Offline()
    first = await start(settings, FakeBackend(), delivery)
    ticket = await first.app.jobs.submit(REQUEST, ALICE)
    await first.app.jobs.wait(ticket.job_id)
    await first.close()
    for _ in range(MAX_DELIVERY_ATTEMPTS + 2):
        services = await start(settings, FakeBackend(), delivery)
        await services.close()
    assert len(delivery.delivered) == MAX_DELIVERY_ATTEMPTS
    [(job_id, message)] = delivery.failures
    assert job_id == ticket.job_id and "could not be posted" in message
    services = await start(settings, FakeBackend(), RecordingDelivery())
    try:
        job = await services.repos.jobs.get(ticket.job_id)
        assert job is not None and job.delivery_attempts == MAX_DELIVERY_ATTEMPTS
        assert job.delivery_failed_at is not None and job.delivered_at is None
    finally:
        await services.close()


async def test_a_dead_worker_refuses_new_jobs_and_says_so_everywhere(tmp_path: Path) -> None:
    settings = load_settings(
        None, data_dir=tmp_path / "data", worker_restart_backoff_s=0, worker_max_restarts=2
    )
    services = await start(settings, FakeBackend(), RecordingDelivery())
    jobs = services.app.jobs

    def planner_bug(*_: object) -> list[object]:
        raise RuntimeError("bug in the planner")

    jobs.queue.take_batch = planner_bug  # type: ignore[method-assign]
    try:
        waiting = await jobs.submit(REQUEST, ALICE)  # accepted: the worker still runs
        for _ in range(200):
            if not jobs.worker.health().alive:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(UserError, match="the image worker has stopped") as refused:
            await jobs.submit(REQUEST, BOB)
        assert "restart the bot" in str(refused.value)
        status = await jobs.status()
        assert not status.worker_ok
        assert status.worker.startswith("stopped (last error: RuntimeError: bug in the planner)")
        assert "dreamcord_worker_up 0" in jobs.metrics.render().splitlines()
        stored = await services.repos.jobs.get(waiting.job_id)
        assert stored is not None and stored.state is JobState.QUEUED  # runs after a restart
        assert len(await services.repos.jobs.list_queued()) == 1  # the refused one is not stored
    finally:
        await services.close()


async def test_a_bug_storing_the_images_fails_the_job_with_an_answer(running, monkeypatch) -> None:
    """A row the database refuses (as edits were, before their operation was allowed)."""
    services, delivery, _ = running

    async def refused(*_args: object, **_kwargs: object) -> None:
        raise sqlite3.IntegrityError("CHECK constraint failed: operation")

    monkeypatch.setattr(services.repos.generations, "create", refused)
    ticket = await services.app.jobs.submit(REQUEST, ALICE)
    job = await asyncio.wait_for(services.app.jobs.wait(ticket.job_id), 10)
    assert job.state is JobState.FAILED and job.error == STORE_FAILED
    assert delivery.failures == [(job.id, STORE_FAILED)]


async def test_a_full_disk_fails_the_job_with_an_answer(running, monkeypatch) -> None:
    """ENOSPC at the one write call (a full disk cannot be made here without root)."""
    services, delivery, _ = running

    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("data.images.os.fsync", no_space)
    ticket = await services.app.jobs.submit(REQUEST, ALICE)
    job = await asyncio.wait_for(services.app.jobs.wait(ticket.job_id), 10)
    expected = f"the disk is full: free space on {services.images.root}"
    assert job.state is JobState.FAILED and job.error == expected
    assert delivery.failures == [(job.id, expected)]
    assert job.delivered_at is not None
