"""Delivery under stress, end to end: expired tokens, 429s, gateway drops, cancel, fairness."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import pytest

from tests.e2e.conftest import (
    ephemeral_reply,
    generation_id_of,
    imagine,
    is_result,
    job_id_of,
    wait_for_job_state,
)
from tests.fakediscord import DiscordHarness, InteractionRecord, RateLimitRule, StoredMessage

pytestmark = pytest.mark.e2e

SLOW = {"steps": 30, "count": 2}
"""A job that keeps the worker busy for a few seconds on the tiny model."""


async def queued_job(ix: InteractionRecord) -> str:
    status = await ix.wait_for_original(lambda m: "Queued" in m.content or "step" in m.content)
    return job_id_of(status)


async def test_a_result_that_outlives_its_token_is_posted_in_the_channel(
    discord: DiscordHarness,
) -> None:
    slow = await discord.slash("imagine", prompt="a slow cathedral", user=discord.alice, **SLOW)
    await queued_job(slow)
    late = await discord.slash("imagine", prompt="a late owl", user=discord.bob, count=1)
    await queued_job(late)
    discord.expire_token(late)  # as if 15 minutes passed before the job finished

    posted = await discord.wait_for_message(
        discord.general,
        lambda m: is_result(m) and "a late owl" in m.content and not m.interaction_token,
        timeout=60,
    )
    assert posted.content.startswith(f"<@{discord.bob.id}>"), "the requester is mentioned"
    assert not posted.ephemeral
    assert not is_result(late.original), "the expired status message could not be edited"
    repos = discord.client.services.repos

    async def remembered() -> bool:
        generation = await repos.generations.get(generation_id_of(posted))
        return generation.message_id == posted.id

    for _ in range(100):
        if await remembered():
            break
        await asyncio.sleep(0.05)
    assert await remembered(), "the new message is remembered, so Delete will find it"


async def test_a_429_storm_on_edits_does_not_slow_generation(discord: DiscordHarness) -> None:
    await imagine(discord, "warm up", count=1)
    baseline, _ = await _time_to_done(discord, "a calm sea")

    rules: list[RateLimitRule] = []

    def storm() -> None:
        # Every edit of the job's message meets 429s: discord.py retries each one 5 times
        # (2.5 s) before giving up. A generation path that awaited edits would take minutes.
        rules.append(discord.rate_limit("PATCH /webhooks/*", count=10_000, retry_after=0.5))

    stormy, job_id = await _time_to_done(discord, "a stormy sea", storm)
    assert rules[0].hits, "the edits did meet the 429s"
    # Generous: CI machines are noisy. Awaiting edits would cost 2.5 s per edit, minutes in all.
    assert stormy < 3 * baseline + 3.0, f"images took {stormy:.1f} s, {baseline:.1f} s before"
    rules[0].remaining = 0  # the storm passes

    def delivered() -> StoredMessage | None:
        messages = discord.messages(discord.general)
        return next((m for m in messages if is_result(m) and "stormy" in m.content), None)

    await discord.wait_until(delivered, timeout=60, what="the stormy result")
    await wait_for_delivery(discord, job_id)


async def wait_for_delivery(discord: DiscordHarness, job_id: str) -> None:
    for _ in range(200):
        job = await discord.client.services.repos.jobs.get(job_id)
        if job.delivered_at is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} was never marked delivered")


async def _time_to_done(
    discord: DiscordHarness, prompt: str, trouble: Callable[[], object] | None = None
) -> tuple[float, str]:
    """Seconds the job ran until its images were stored (not posted), and its id.

    `trouble` starts right after the job is queued.
    """
    ix = await discord.slash("imagine", prompt=prompt, count=2, steps=40)
    job_id = await queued_job(ix)
    if trouble is not None:
        trouble()
    job = await wait_for_job_state(discord.client, job_id, {"done"})
    assert job.started_at is not None and job.finished_at is not None
    ran = datetime.fromisoformat(job.finished_at) - datetime.fromisoformat(job.started_at)
    return ran.total_seconds(), job_id


async def test_a_gateway_outage_during_a_job_still_delivers_the_result(
    discord: DiscordHarness,
) -> None:
    ix = await discord.slash("imagine", prompt="a lighthouse in fog", count=2, steps=20)
    job_id = await queued_job(ix)
    async with discord.gateway_outage():
        # The result goes out over REST while the gateway is down.
        result = await ix.wait_for_original(is_result, timeout=60)
    await discord.wait_resumed()
    await wait_for_delivery(discord, job_id)
    info = await discord.click(result, "Info")
    assert "Seed:" in (await ephemeral_reply(info)).content, "buttons work after the resume"


async def test_a_dropped_gateway_mid_job_is_resumed_and_the_result_arrives(
    discord: DiscordHarness,
) -> None:
    ix = await discord.slash("imagine", prompt="a stone bridge", count=2, steps=20)
    await ix.wait_for_original(lambda m: "step" in m.content, timeout=30)
    await discord.drop_gateway()
    await ix.wait_for_original(is_result, timeout=60)


async def test_cancel_removes_a_queued_job_and_refuses_other_users(
    discord: DiscordHarness,
) -> None:
    slow = await discord.slash("imagine", prompt="a slow castle", user=discord.alice, **SLOW)
    slow_id = await queued_job(slow)
    second = await discord.slash("imagine", prompt="a queued tower", user=discord.alice, count=1)
    second_id = await queued_job(second)
    status = second.original

    refused = await discord.click(status, "Cancel", user=discord.bob)
    assert "only the person who asked" in (await ephemeral_reply(refused)).content
    assert discord.client.app.jobs.queue.get(second_id) is not None

    cancel = await discord.click(status, "Cancel", user=discord.alice)
    assert "removed from the queue" in (await ephemeral_reply(cancel)).content
    await second.wait_for_original(lambda m: "Cancelled" in m.content)
    assert (await discord.client.services.repos.jobs.get(second_id)).state == "cancelled"

    stop = await discord.click(slow.original, "Cancel", user=discord.alice)
    assert "Cancelled" in (await ephemeral_reply(stop)).content
    await wait_for_job_state(discord.client, slow_id, {"cancelled"})


async def test_one_user_flooding_the_queue_does_not_push_another_to_the_back(
    discord: DiscordHarness,
) -> None:
    # Different step counts: alice's jobs cannot share a batch, so each runs on its own.
    alice = []
    for steps in (20, 21, 22):
        ix = await discord.slash("imagine", prompt=f"alice {steps}", count=2, steps=steps)
        alice.append(await queued_job(ix))
    bob_ix = await discord.slash("imagine", prompt="bob's one", count=2, steps=23, user=discord.bob)
    bob_status = await bob_ix.wait_for_original(lambda m: "Queued" in m.content)
    assert "#1 in the queue" in bob_status.content, bob_status.content
    bob = job_id_of(bob_status)

    finished = {}
    for job_id in (*alice, bob):
        job = await wait_for_job_state(discord.client, job_id, {"done"}, timeout=90)
        finished[job_id] = job.finished_at
    order = sorted(finished, key=finished.__getitem__)
    assert order.index(bob) < order.index(alice[-1]), "bob ran before alice's last job"
    assert order.index(bob) <= 1, f"bob's job ran at place {order.index(bob) + 1}"
