"""/blend and image prompts refused when no IP-Adapter is configured: privately, nothing kept."""

from __future__ import annotations

import pytest

from bot.settings import Settings
from pipeline.image_prompts.files import NOT_CONFIGURED
from tests.e2e.conftest import ephemeral_reply
from tests.e2e.test_blend import picture
from tests.fakediscord import DiscordHarness

pytestmark = pytest.mark.e2e


async def test_blend_without_an_adapter_is_refused_privately_and_queues_nothing(
    discord: DiscordHarness, settings: Settings
) -> None:
    ix = await discord.slash("blend", image1=picture("orange"), image2=picture("teal"))
    reply = await ephemeral_reply(ix)
    assert NOT_CONFIGURED in reply.content
    assert not await discord.client.services.repos.jobs.init_images()
    assert not list((settings.data_dir / "uploads").rglob("*.png"))


async def test_iw_without_an_image_prompt_is_refused(discord: DiscordHarness) -> None:
    ix = await discord.slash("imagine", prompt="a fox --iw 2")
    reply = await ephemeral_reply(ix)
    assert "--iw sets an image prompt's weight" in reply.content
