"""Jobs: creation, the state machine, and exactly-once delivery."""

from __future__ import annotations

import pytest

from data.jobs import InvalidTransition, JobState
from data.repositories import Repositories
from pipeline.request import GenerationRequest, LoraRef

REQUEST = GenerationRequest(prompt="a fox", seed=123, loras=(LoraRef("ghibli", 0.7, 0.7),))


async def test_create_stores_every_field_and_round_trips_the_request(
    repos: Repositories,
) -> None:
    job = await repos.jobs.create(
        REQUEST,
        user_id=1,
        guild_id=2,
        channel_id=3,
        interaction_id=4,
        interaction_token="tok",
        priority=5,
    )
    loaded = await repos.jobs.get(job.id)
    assert loaded == job
    assert len(job.id) == 32
    assert job.state is JobState.QUEUED
    assert job.request == REQUEST
    assert (job.user_id, job.guild_id, job.channel_id, job.interaction_id) == (1, 2, 3, 4)
    assert (job.interaction_token, job.priority, job.attempts) == ("tok", 5, 0)


async def test_get_unknown_job_is_none(repos: Repositories) -> None:
    assert await repos.jobs.get("0" * 32) is None


async def test_list_queued_is_in_creation_order(repos: Repositories) -> None:
    ids = [(await repos.jobs.create(REQUEST, user_id=u)).id for u in (3, 1, 2, 1)]
    await repos.jobs.mark_running(ids[1])
    assert [job.id for job in await repos.jobs.list_queued()] == [ids[0], ids[2], ids[3]]
    assert [job.id for job in await repos.jobs.jobs_in_state(JobState.RUNNING)] == [ids[1]]


async def test_run_retry_and_finish(repos: Repositories) -> None:
    job = await repos.jobs.create(REQUEST, user_id=1)
    running = await repos.jobs.mark_running(job.id)
    assert (running.state, running.attempts) == (JobState.RUNNING, 1)
    assert running.started_at is not None
    requeued = await repos.jobs.requeue(job.id)
    assert (requeued.state, requeued.started_at) == (JobState.QUEUED, None)
    await repos.jobs.mark_running(job.id)
    failed = await repos.jobs.mark_failed(job.id, "out of memory")
    assert (failed.state, failed.attempts, failed.error) == (JobState.FAILED, 2, "out of memory")
    assert failed.finished_at is not None


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ((), "mark_done"),
        ((), "requeue"),
        ((), "mark_failed"),
        (("mark_running", "mark_done"), "mark_running"),
        (("mark_running", "mark_done"), "mark_cancelled"),
        (("mark_cancelled",), "mark_running"),
        (("mark_running", "mark_failed"), "requeue"),
    ],
)
async def test_invalid_transitions_raise_and_change_nothing(
    repos: Repositories, path: tuple[str, ...], refused: str
) -> None:
    job = await repos.jobs.create(REQUEST, user_id=1)
    for step in path:
        await _call(repos, step, job.id)
    before = await repos.jobs.get(job.id)
    with pytest.raises(InvalidTransition):
        await _call(repos, refused, job.id)
    assert await repos.jobs.get(job.id) == before


async def test_queued_and_running_jobs_can_be_cancelled(repos: Repositories) -> None:
    queued = await repos.jobs.create(REQUEST, user_id=1)
    running = await repos.jobs.create(REQUEST, user_id=1)
    await repos.jobs.mark_running(running.id)
    assert (await repos.jobs.mark_cancelled(queued.id)).state is JobState.CANCELLED
    assert (await repos.jobs.mark_cancelled(running.id)).state is JobState.CANCELLED


async def test_transition_of_unknown_job_says_it_does_not_exist(repos: Repositories) -> None:
    with pytest.raises(InvalidTransition, match="does not exist"):
        await repos.jobs.mark_running("f" * 32)


async def test_mark_delivered_only_once_and_forgets_the_token(repos: Repositories) -> None:
    job = await repos.jobs.create(REQUEST, user_id=1, interaction_token="secret")
    await repos.jobs.mark_running(job.id)
    await repos.jobs.mark_done(job.id)
    assert [j.id for j in await repos.jobs.undelivered()] == [job.id]
    assert await repos.jobs.mark_delivered(job.id) is True
    assert await repos.jobs.mark_delivered(job.id) is False
    delivered = await repos.jobs.get(job.id)
    assert delivered.delivered_at is not None
    assert delivered.interaction_token is None
    assert await repos.jobs.undelivered() == []


async def test_mark_delivered_refuses_unfinished_job(repos: Repositories) -> None:
    job = await repos.jobs.create(REQUEST, user_id=1)
    with pytest.raises(InvalidTransition, match="queued"):
        await repos.jobs.mark_delivered(job.id)


async def test_set_message_is_stored(repos: Repositories) -> None:
    job = await repos.jobs.create(REQUEST, user_id=1)
    await repos.jobs.set_message(job.id, 555)
    assert (await repos.jobs.get(job.id)).message_id == 555


async def _call(repos: Repositories, method: str, job_id: str) -> object:
    if method == "mark_failed":
        return await repos.jobs.mark_failed(job_id, "error")
    return await getattr(repos.jobs, method)(job_id)


async def test_every_picture_a_request_names_is_in_use(repos: Repositories) -> None:
    """Init images, masks, control maps and image prompts all keep their upload."""
    from pipeline.request import ControlUnit, ImagePrompt, Mode

    request = GenerationRequest(
        prompt="a fox",
        mode=Mode.INPAINT,
        init_image="/up/init.png",
        mask_image="/up/mask.png",
        controls=(ControlUnit("canny", "/up/map1.png"), ControlUnit("depth", "/up/map2.png")),
        image_prompts=(ImagePrompt("/up/look.png", style=True),),
    )
    await repos.jobs.create(request, user_id=1, guild_id=None, channel_id=None)
    await repos.jobs.create(
        GenerationRequest(prompt="plain"), user_id=1, guild_id=None, channel_id=None
    )
    named = {"/up/init.png", "/up/mask.png", "/up/map1.png", "/up/map2.png", "/up/look.png"}
    assert await repos.jobs.init_images() == named
    for path in named:
        assert await repos.jobs.uses_init_image(path)
    assert not await repos.jobs.uses_init_image("/up/other.png")
