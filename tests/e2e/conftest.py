"""The real bot (production wiring, tiny model, temp data dir) against the fake Discord server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.discord_bot import DreamcordBot
from bot.settings import Settings, load_settings
from tests.fakediscord import DiscordHarness, run_bot

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
