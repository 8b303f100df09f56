"""The real bot (production wiring, tiny model, temp data dir) against the fake Discord server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bot.discord_bot import DreamcordBot
from bot.settings import Settings, load_settings
from tests.fakediscord import (
    DiscordHarness,
    FakeChannel,
    FakeMember,
    InteractionRecord,
    StoredMessage,
    run_bot,
)
from tests.fakediscord.harness import DEFAULT_TOKEN

if TYPE_CHECKING:
    from data.jobs import Job

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        None,
        model="tiny",
        data_dir=tmp_path / "data",
        device="cpu",
        default_size="64x64",
        default_steps=3,
        default_count=4,
        max_queued_per_user=5,
    )


def make_bot(settings: Settings, edit_interval_s: float = 0.2) -> Callable[[], DreamcordBot]:
    def factory() -> DreamcordBot:
        bot = DreamcordBot(settings)
        bot.presenter.edit_interval_s = edit_interval_s
        return bot

    return factory


@pytest.fixture
async def discord(settings: Settings) -> AsyncIterator[DiscordHarness]:
    async with run_bot(make_bot(settings), ack_timeout=3.0) as harness:
        yield harness
        harness.assert_no_errors()


# Helpers shared by the end-to-end tests of every flow.


def labels(message: StoredMessage) -> list[str]:
    return [button.get("label") for button in message.buttons()]


def is_result(message: StoredMessage) -> bool:
    """A finished result: the grid attached and the upscale buttons under it."""
    return bool(message.attachments) and any(
        str(button.get("custom_id", "")).startswith("dc:u:") for button in message.buttons()
    )


def job_id_of(message: StoredMessage) -> str:
    """The job id a queued/running status message carries in its Cancel button."""
    for button in message.buttons():
        custom_id = str(button.get("custom_id", ""))
        if custom_id.startswith("dc:c:"):
            return custom_id.removeprefix("dc:c:")
    raise LookupError(f"message {message.id} has no Cancel button: {labels(message)}")


def generation_id_of(message: StoredMessage) -> int:
    for button in message.buttons():
        parts = str(button.get("custom_id", "")).split(":")
        if len(parts) >= 3 and parts[0] == "dc" and parts[1] in "uvreFfid":
            return int(parts[2])
    raise LookupError(f"message {message.id} has no result buttons: {labels(message)}")


async def imagine(
    discord: DiscordHarness,
    prompt: str = "a red fox in the snow",
    *,
    user: FakeMember | None = None,
    channel: FakeChannel | None = None,
    timeout: float = 60.0,  # noqa: ASYNC109
    **options: Any,
) -> StoredMessage:
    """Run /imagine and wait for its finished result message."""
    ix = await discord.slash("imagine", prompt=prompt, user=user, channel=channel, **options)
    return await ix.wait_for_original(is_result, timeout=timeout)


async def ephemeral_reply(ix: InteractionRecord, timeout: float = 10.0) -> StoredMessage:  # noqa: ASYNC109
    """The ephemeral message the bot answered `ix` with (response or follow-up)."""

    def check() -> StoredMessage | None:
        candidates = [ix.original, *ix.followups]
        for message in candidates:
            if message is not None and message.ephemeral and not message.loading:
                return None if message.deleted else message
        return None

    return await ix.server.wait_until(check, timeout=timeout, what="an ephemeral reply")


async def wait_for_job_state(
    bot: DreamcordBot,
    job_id: str,
    states: set[str],
    timeout: float = 60.0,  # noqa: ASYNC109
) -> Job:
    """Poll the job's row until it reaches one of `states`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await bot.services.repos.jobs.get(job_id)
        if job is not None and job.state in states:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"job {job_id} is {job and job.state}, not {states}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def restarted(
    harness: DiscordHarness, factory: Callable[[], DreamcordBot]
) -> AsyncIterator[DreamcordBot]:
    """Stop the harness's bot and start a new one from `factory` on the same fake server.

    The fake server keeps its messages, so a test can click a button of a message the old
    process posted. The new client is closed on exit (run_bot only knows the first one).
    """
    old_task = harness.task
    await harness.client.close()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(old_task, timeout=10)
    # The old client task ended on purpose: stop the server from treating that as a crash.
    harness.server._watched.remove(old_task)
    client = factory()
    client._connection.guild_ready_timeout = 0.05
    task = asyncio.create_task(client.start(DEFAULT_TOKEN), name="fakediscord-client-2")
    harness.server.watch(task)
    harness.client, harness.task = client, task
    try:
        await harness.wait_until_ready(10.0)
        yield client
    finally:
        await client.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        harness.server._watched.remove(task)
