"""The real bot (production wiring, tiny model, temp data dir) against the fake Discord server.

The ``discord`` fixture comes from the fake's pytest plugin (tests/fakediscord/plugin.py); this
file only says how to build Dreamcord for it, and the helpers every flow shares.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bot.discord_bot import DreamcordBot
from bot.settings import Settings, load_settings
from tests.fakediscord import (
    DiscordHarness,
    FakeChannel,
    FakeDiscord,
    FakeMember,
    InteractionRecord,
    StoredMessage,
)

if TYPE_CHECKING:
    from data.jobs import Job

pytestmark = pytest.mark.e2e


def tiny_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """The e2e bot's settings: the tiny model on the CPU at 64x64; a test file overrides a few."""
    chosen: dict[str, Any] = {
        "model": "tiny",
        "data_dir": tmp_path / "data",
        "device": "cpu",
        "default_size": "64x64",
        "default_steps": 3,
        "default_count": 4,
        "max_queued_per_user": 5,
    }
    return load_settings(None, **(chosen | overrides))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path)


def make_bot(
    settings: Settings, edit_interval_s: float = 0.2
) -> Callable[[FakeDiscord], DreamcordBot]:
    """Dreamcord as a deployment against a Discord-compatible server would run it: the
    server's urls in DISCORD_API_BASE and DISCORD_GATEWAY_URL, its server as HOME_GUILD_ID
    unless the settings name a home."""

    def factory(server: FakeDiscord) -> DreamcordBot:
        update: dict[str, Any] = {
            "discord_api_base": server.api_url,
            "discord_gateway_url": server.gateway_url,
        }
        if settings.home_guild is None:
            # The fake's one server is the bot's home, whose admins manage the library.
            update["home_guild_id"] = server.scene.guild_id
        pointed = settings.model_copy(update=update)
        bot = DreamcordBot(pointed)
        bot.presenter.edit_interval_s = edit_interval_s
        return bot

    return factory


@pytest.fixture
def discord_bot_factory(settings: Settings) -> Callable[[FakeDiscord], DreamcordBot]:
    return make_bot(settings)


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
