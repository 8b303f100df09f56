import dataclasses

import pytest

from pipeline.planner import Candidate, batch_key, choose_head, plan_batch
from pipeline.queue import JobQueue, Priority
from pipeline.request import (
    GenerationRequest,
    HiresSpec,
    HypernetRef,
    InpaintSpec,
    LoraRef,
    Mode,
)

BASE = GenerationRequest(prompt="a fox")


def candidate(
    job_id: str,
    request: GenerationRequest = BASE,
    *,
    user: str | None = None,
    images: int = 1,
    started: bool = False,
    passed_over: int = 0,
    order: int = 0,
) -> Candidate:
    return Candidate(
        job_id=job_id,
        user_id=user or job_id,
        request=request,
        pending=tuple(range(images)),
        started=started,
        passed_over=passed_over,
        order=order,
    )


def plan(candidates: list[Candidate], *, fits: int = 8, limit: int = 8, max_running: int = 9):
    return plan_batch(
        candidates,
        capacity=lambda request: fits,
        limit=limit,
        overdue_after=3,
        running_by_user={},
        max_running=max_running,
    )


def test_batch_key_ignores_prompt_seed_and_lora_order() -> None:
    one = dataclasses.replace(BASE, loras=(LoraRef("a", 0.5), LoraRef("b", 1.0)), seed=1)
    two = dataclasses.replace(
        BASE, prompt="a cat", negative="blurry", loras=(LoraRef("b", 1.0), LoraRef("a", 0.5))
    )
    assert batch_key(one) == batch_key(two)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other"},
        {"loras": (LoraRef("a", 0.7),)},
        {"hypernets": (HypernetRef("h", 1.0),)},
        {"width": 768},
        {"height": 768},
        {"steps": 30},
        {"sampler": "Euler a"},
        {"cfg": 5.0},
        {"clip_skip": 2},
        {"rng": "NV"},
        {"ensd": 31337},
        {"hires": HiresSpec()},
        {"mode": Mode.IMG2IMG},
        {"strength": 0.4},
        {"init_image": "abc"},
        {"token_merging": 0.5},
    ],
)
def test_batch_key_differs_for_each_field_that_changes_the_model_call(change: dict) -> None:
    assert batch_key(dataclasses.replace(BASE, **change)) != batch_key(BASE)


def test_batch_key_differs_by_lora_weight() -> None:
    one = dataclasses.replace(BASE, loras=(LoraRef("a", 0.5),))
    two = dataclasses.replace(BASE, loras=(LoraRef("a", 0.6),))
    assert batch_key(one) != batch_key(two)


def test_batch_key_differs_by_hypernetwork_strength_and_order() -> None:
    """Each hypernetwork transforms the previous one's output, so order is part of the key."""
    a, b = HypernetRef("a", 1.0), HypernetRef("b", 0.5)
    keys = {
        batch_key(dataclasses.replace(BASE, hypernets=refs))
        for refs in ((a, b), (b, a), (a, HypernetRef("b", 0.6)))
    }
    assert len(keys) == 3


def test_a_request_with_hypernetworks_survives_its_json_round_trip() -> None:
    request = dataclasses.replace(BASE, hypernets=(HypernetRef("a", 0.8), HypernetRef("b", 1.0)))
    assert GenerationRequest.from_json(request.to_json()) == request


def test_compatible_jobs_join_the_head_in_fairness_order() -> None:
    other = dataclasses.replace(BASE, steps=40)
    tasks = plan([candidate("a", images=2), candidate("b", other), candidate("c", images=3)])
    assert [(t.job_id, t.index) for t in tasks] == [
        ("a", 0),
        ("a", 1),
        ("c", 0),
        ("c", 1),
        ("c", 2),
    ]


def test_a_job_with_more_images_than_fit_is_split() -> None:
    tasks = plan([candidate("a", images=10), candidate("b")], fits=4)
    assert [(t.job_id, t.index) for t in tasks] == [("a", 0), ("a", 1), ("a", 2), ("a", 3)]


def test_the_batch_is_held_to_the_configured_limit_and_the_memory_model() -> None:
    jobs = [candidate(str(i)) for i in range(10)]
    assert len(plan(jobs, fits=6, limit=3)) == 3
    assert len(plan(jobs, fits=2, limit=8)) == 2


def test_a_user_at_the_running_cap_starts_no_new_job_but_a_started_one_goes_on() -> None:
    jobs = [
        candidate("a1", user="a", images=2),
        candidate("a2", user="a"),
        candidate("b1", user="b", started=True),
    ]
    tasks = plan_batch(
        jobs,
        capacity=lambda r: 8,
        limit=8,
        overdue_after=3,
        running_by_user={"a": 0, "b": 1},
        max_running=1,
    )
    assert [t.job_id for t in tasks] == ["a1", "a1", "b1"]


def test_the_oldest_overdue_job_leads_ahead_of_fairness_order() -> None:
    jobs = [
        candidate("new", order=5),
        candidate("late", order=3, passed_over=3),
        candidate("old", order=1, passed_over=4),
    ]
    head = choose_head(jobs, lambda c: True, overdue_after=3)
    assert head is not None and head.job_id == "old"


def test_nothing_to_plan_gives_an_empty_batch() -> None:
    assert plan([]) == []
    assert plan([candidate("a", user="a", started=False)], max_running=0) == []


def run_batches_until_started(queue: JobQueue, job_id: str, new_job) -> int:
    """Each round a new user submits an incompatible job; count batches until `job_id` runs."""
    for batches in range(1, 100):
        new_job(batches)
        tasks = queue.take_batch(lambda request: 4, 4)
        if any(task.job_id == job_id for task in tasks):
            return batches
        for task in tasks:  # the batch ends; its results do not matter here
            queue.cancel(task.job_id)
    raise AssertionError("starved")


def test_starvation_bound_a_low_priority_job_runs_within_overdue_after_plus_one_batches() -> None:
    queue = JobQueue(max_queued_per_user=5, max_running_per_user=5, overdue_after=4)
    queue.submit("preview", "admin", dataclasses.replace(BASE, steps=10), Priority.LOW)

    def newcomer(round_no: int) -> None:
        queue.submit(f"n{round_no}", f"user{round_no}", BASE)

    assert run_batches_until_started(queue, "preview", newcomer) == 4 + 1


def test_starvation_bound_counts_only_older_overdue_jobs_ahead() -> None:
    queue = JobQueue(max_queued_per_user=5, max_running_per_user=5, overdue_after=2)
    queue.submit("old", "x", dataclasses.replace(BASE, steps=10), Priority.LOW)
    queue.submit("young", "y", dataclasses.replace(BASE, steps=11), Priority.LOW)

    def newcomer(round_no: int) -> None:
        queue.submit(f"n{round_no}", f"user{round_no}", BASE)

    # Both become overdue after 2 batches; "old" leads batch 3, "young" batch 4 = 2 + 1 older.
    assert run_batches_until_started(queue, "young", newcomer) == 2 + 1 + 1


EDIT = dataclasses.replace(
    BASE, mode=Mode.INPAINT, strength=0.75, init_image="a.png", mask_image="a-mask.png"
)


def test_edits_with_different_pictures_and_masks_share_a_batch_key() -> None:
    other = dataclasses.replace(EDIT, init_image="b.png", mask_image="b-mask.png", seed=5)
    assert batch_key(other) == batch_key(EDIT)
    assert batch_key(dataclasses.replace(EDIT, inpaint=InpaintSpec())) == batch_key(EDIT)


@pytest.mark.parametrize(
    "change",
    [
        {"inpaint": InpaintSpec(mask_blur=8)},
        {"inpaint": InpaintSpec(area="masked")},
        {"inpaint": InpaintSpec(padding=64)},
        {"inpaint": InpaintSpec(fill="latent noise")},
        {"mode": Mode.OUTPAINT},
        {"model": "tiny-inpainting"},
    ],
)
def test_edit_batch_key_differs_for_what_changes_the_masked_pass(change: dict) -> None:
    assert batch_key(dataclasses.replace(EDIT, **change)) != batch_key(EDIT)


def test_an_edit_request_survives_its_json_round_trip_and_old_rows_still_load() -> None:
    request = dataclasses.replace(EDIT, inpaint=InpaintSpec(6, "masked", 48, "latent nothing"))
    assert GenerationRequest.from_json(request.to_json()) == request
    old = '{"prompt": "a fox", "mode": "img2img", "init_image": "a.png", "strength": 0.5}'
    loaded = GenerationRequest.from_json(old)
    assert (loaded.mask_image, loaded.inpaint, loaded.inpaint_spec) == (None, None, InpaintSpec())
