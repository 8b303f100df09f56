"""Many servers end to end: only the servers in DISCORD_GUILDS are served, and only the bot's
owners manage the library that every server shares."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bot.discord_bot import DreamcordBot
from bot.settings import Settings
from cogs.checks import NOT_SERVED
from tests.e2e.conftest import ephemeral_reply, imagine, make_bot
from tests.fakediscord import DiscordHarness, FakeDiscord

pytestmark = pytest.mark.e2e

ELSEWHERE = 424242
"""A server id the fake's one server is not."""


async def test_a_server_outside_discord_guilds_gets_a_polite_refusal(
    discord: DiscordHarness, settings: Settings
) -> None:
    old = await imagine(discord, "a lighthouse", count=1)
    # Commands synced globally before DISCORD_GUILDS was set stay on Discord for a while.
    narrowed = settings.model_copy(update={"discord_guilds": [ELSEWHERE]})
    async with discord.restart(make_bot(narrowed)) as bot:
        ix = await discord.slash("imagine", prompt="a fox")
        assert (await ephemeral_reply(ix)).content == f"⚠️ {NOT_SERVED}"
        click = await discord.click(old, "Info")
        assert (await ephemeral_reply(click)).content == f"⚠️ {NOT_SERVED}"
        assert await bot.services.repos.jobs.list_queued() == []


@pytest.fixture
def discord_bot_factory(request: pytest.FixtureRequest, settings: Settings) -> Callable:
    """The fake's server is not the home; Bob is an owner; ADMIN_ROLE names Ada's role."""
    if request.node.name.startswith("test_a_server_outside"):
        return make_bot(settings)

    def factory(server: FakeDiscord) -> DreamcordBot:
        update = {
            "home_guild_id": ELSEWHERE,
            "owner_ids": [server.scene.bob.id],
            "admin_role": "Admins",
        }
        return make_bot(settings.model_copy(update=update))(server)

    return factory


async def test_only_owners_manage_the_shared_library_other_admins_their_rules(
    discord: DiscordHarness,
) -> None:
    for verb, options in (("lora remove", {"name": "x"}), ("embedding scan", {})):
        ix = await discord.slash(verb, user=discord.admin, **options)
        assert "only the bot's owners manage it" in (await ephemeral_reply(ix)).content
    owner = await discord.slash("lora remove", user=discord.bob, name="x")
    assert "there is no LoRA named 'x'" in (await ephemeral_reply(owner)).content

    rules = await discord.slash("policy set", user=discord.admin, max_steps=9)
    assert "Server rules, saved" in (await ephemeral_reply(rules)).embeds[0]["title"]
