import dataclasses

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule
from PIL import Image

from pipeline.backend import ImageResult, ImageTask
from pipeline.errors import UserError
from pipeline.queue import (
    CancelOutcome,
    JobQueue,
    JobState,
    Priority,
    SpeedEstimate,
    image_cost,
)
from pipeline.request import GenerationRequest, HiresSpec

BASE = GenerationRequest(prompt="a fox")


def make_queue(**kwargs) -> JobQueue:
    return JobQueue(**{"max_queued_per_user": 10, "max_running_per_user": 10, **kwargs})


def results_for(tasks: list[ImageTask]) -> list[ImageResult]:
    return [ImageResult(task, Image.new("RGB", (1, 1)), "") for task in tasks]


def test_order_is_round_robin_by_user_and_oldest_first_within_a_user() -> None:
    queue = make_queue()
    for job_id, user in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c")]:
        queue.submit(job_id, user, BASE)
    queue.submit("c2", "c", BASE)
    assert [job.job_id for job in queue.waiting()] == ["a1", "b1", "c1", "a2", "c2", "a3"]
    assert queue.position("c1") == 3


def test_the_user_served_longest_ago_goes_first() -> None:
    queue = make_queue()
    queue.submit("a1", "a", BASE)
    queue.submit("b1", "b", dataclasses.replace(BASE, steps=30))
    queue.take_batch(lambda request: 1, 1)  # serves a
    queue.submit("a2", "a", BASE)
    queue.submit("c1", "c", BASE)
    assert [job.job_id for job in queue.waiting()] == ["b1", "c1", "a2"]


def test_low_priority_jobs_go_after_normal_ones() -> None:
    queue = make_queue()
    queue.submit("preview", "admin", BASE, Priority.LOW)
    queue.submit("a1", "a", BASE)
    queue.submit("a2", "a", BASE)
    assert [job.job_id for job in queue.waiting()] == ["a1", "a2", "preview"]


def test_submitting_past_the_queued_cap_is_a_user_error() -> None:
    queue = make_queue(max_queued_per_user=2)
    queue.submit("a1", "a", BASE)
    queue.submit("a2", "a", BASE)
    with pytest.raises(UserError, match="2 jobs waiting"):
        queue.submit("a3", "a", BASE)
    queue.submit("b1", "b", BASE)


def test_restored_jobs_skip_the_cap_since_they_were_accepted_before() -> None:
    queue = make_queue(max_queued_per_user=1)
    queue.restore("a1", "a", BASE)
    queue.restore("a2", "a", BASE)
    assert len(queue.unfinished()) == 2


def test_the_running_cap_holds_a_users_next_job_until_the_first_finishes() -> None:
    queue = make_queue(max_running_per_user=1)
    queue.submit("a1", "a", BASE)
    queue.submit("a2", "a", BASE)
    first = queue.take_batch(lambda request: 8, 8)
    assert [t.job_id for t in first] == ["a1"]
    assert not queue.has_work()
    queue.complete(first, results_for(first), 1.0)
    assert [t.job_id for t in queue.take_batch(lambda request: 8, 8)] == ["a2"]


def test_a_split_job_is_done_once_all_its_batches_are() -> None:
    queue = make_queue()
    queue.submit("a", "a", dataclasses.replace(BASE, count=3))
    first = queue.take_batch(lambda request: 2, 8)
    assert queue.complete(first, results_for(first), 1.0) == []
    second = queue.take_batch(lambda request: 2, 8)
    [job] = queue.complete(second, results_for(second), 1.0)
    assert job.state is JobState.DONE
    assert [result.task.index for result in job.ordered_results()] == [0, 1, 2]
    assert queue.unfinished() == []


def test_cancel_removes_a_queued_job_and_stops_a_running_one() -> None:
    queue = make_queue()
    queue.submit("a", "a", BASE)
    queue.submit("b", "b", dataclasses.replace(BASE, steps=30))
    running = queue.take_batch(lambda request: 8, 8)
    assert queue.cancel("b") is CancelOutcome.REMOVED
    assert queue.cancel("a") is CancelOutcome.STOPPING
    assert queue.cancel("a") is CancelOutcome.NOT_FOUND
    assert queue.complete(running, results_for(running), 1.0) == []
    assert queue.unfinished() == []


def test_requeued_images_wait_again_and_keep_their_job_started() -> None:
    queue = make_queue()
    job = queue.submit("a", "a", dataclasses.replace(BASE, count=2))
    tasks = queue.take_batch(lambda request: 8, 8)
    queue.requeue(tasks)
    assert job.pending == [0, 1] and not job.running
    assert job.state is JobState.RUNNING


def test_image_cost_counts_a_hires_pass_at_its_own_size() -> None:
    assert image_cost(BASE) == 512 * 512 * 25
    hires = dataclasses.replace(BASE, hires=HiresSpec(scale=2.0, steps=10))
    assert image_cost(hires) == 512 * 512 * 25 + 1024 * 1024 * 10


def test_speed_starts_at_the_default_then_is_smoothed() -> None:
    speed = SpeedEstimate(initial=100.0, smoothing=0.5)
    speed.record(1000, 1.0)
    assert speed.per_second == 1000
    speed.record(2000, 1.0)
    assert speed.per_second == 1500


def test_eta_adds_the_work_ahead_and_the_rest_of_the_running_batch() -> None:
    now = [0.0]
    cost = image_cost(BASE)
    queue = make_queue(speed=SpeedEstimate(initial=cost), clock=lambda: now[0])
    queue.submit("a", "a", BASE)
    queue.submit("b", "b", dataclasses.replace(BASE, steps=30))
    queue.submit("c", "c", BASE)
    queue.take_batch(lambda request: 1, 1)  # a runs: 1 s of work
    now[0] = 0.25
    assert queue.eta_s("c") == pytest.approx(0.75 + 30 / 25 + 1)
    assert queue.position("c") == 2
    assert queue.eta_s("a") == pytest.approx(0.75)
    assert queue.position("a") is None


class QueueMachine(RuleBasedStateMachine):
    """Submit, run, complete, fail, cancel and restart; no job is lost or done twice."""

    CAP_QUEUED = 2
    CAP_RUNNING = 1

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.queue = self.new_queue()
        self.next_id = 0
        self.live: dict[str, tuple[str, GenerationRequest]] = {}
        self.finished: set[str] = set()
        self.in_flight: list[ImageTask] = []

    def new_queue(self) -> JobQueue:
        return JobQueue(
            max_queued_per_user=self.CAP_QUEUED,
            max_running_per_user=self.CAP_RUNNING,
            overdue_after=3,
        )

    @rule(
        target=jobs,
        user=st.sampled_from("abc"),
        count=st.integers(1, 4),
        steps=st.sampled_from([20, 25]),
        low=st.booleans(),
    )
    def submit(self, user: str, count: int, steps: int, low: bool) -> str:
        job_id = f"j{self.next_id}"
        self.next_id += 1
        request = dataclasses.replace(BASE, count=count, steps=steps)
        priority = Priority.LOW if low else Priority.NORMAL
        try:
            self.queue.submit(job_id, user, request, priority)
        except UserError:
            # Refused jobs are not lost, the user was told; refusal only at the cap.
            assert self.queued_of(user) >= self.CAP_QUEUED
            return job_id
        assert self.queued_of(user) <= self.CAP_QUEUED
        self.live[job_id] = (user, request)
        return job_id

    def queued_of(self, user: str) -> int:
        """Jobs of the user with images still to start: what the cap counts."""
        jobs = self.queue.unfinished()
        return sum(1 for job in jobs if job.user_id == user and job.pending)

    @precondition(lambda self: not self.in_flight)
    @rule(limit=st.integers(1, 5))
    def start_batch(self, limit: int) -> None:
        had_work = self.queue.has_work()
        self.in_flight = self.queue.take_batch(lambda request: 3, limit)
        assert bool(self.in_flight) == had_work
        assert len({task.request.steps for task in self.in_flight}) <= 1, "one batch key"

    @precondition(lambda self: self.in_flight)
    @rule()
    def complete(self) -> None:
        done = self.queue.complete(self.in_flight, results_for(self.in_flight), 0.5)
        self.in_flight = []
        for job in done:
            assert job.job_id not in self.finished, "done twice"
            assert len(job.ordered_results()) == job.request.count
            self.finished.add(job.job_id)
            del self.live[job.job_id]

    @precondition(lambda self: self.in_flight)
    @rule()
    def interrupt(self) -> None:
        self.queue.requeue(self.in_flight)
        self.in_flight = []

    @rule(job_id=jobs)
    def fail(self, job_id: str) -> None:
        if self.queue.fail(job_id) is not None:
            self.live.pop(job_id)
            self.finished.add(job_id)

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        if self.queue.cancel(job_id) is not CancelOutcome.NOT_FOUND:
            self.live.pop(job_id)
            self.finished.add(job_id)

    @rule()
    def restart(self) -> None:
        """What the service does from SQLite: every unfinished job is queued again, whole."""
        survivors = self.queue.unfinished()
        self.queue = self.new_queue()
        self.in_flight = []
        for job in survivors:
            self.queue.restore(job.job_id, job.user_id, job.request, job.priority)

    @invariant()
    def no_job_is_lost(self) -> None:
        assert {job.job_id for job in self.queue.unfinished()} == set(self.live)

    @invariant()
    def the_running_cap_holds(self) -> None:
        assert all(n <= self.CAP_RUNNING for n in self.queue.running_by_user().values())

    @invariant()
    def every_image_is_in_exactly_one_place(self) -> None:
        for job in self.queue.unfinished():
            places = [*job.pending, *job.running, *job.results]
            assert sorted(places) == list(range(job.request.count))


QueueMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_queue_state_machine = QueueMachine.TestCase
