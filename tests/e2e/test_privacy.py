"""Who sees a stored generation where, end to end: /show, buttons and published lists."""

from __future__ import annotations

import pytest

from cogs.pages import HIDDEN
from tests.e2e.conftest import ephemeral_reply, generation_id_of, imagine, is_result
from tests.fakediscord import DiscordHarness, FakeChannel

pytestmark = pytest.mark.e2e


def public_results(discord: DiscordHarness, channel: FakeChannel) -> list[int]:
    return [
        message.id
        for message in discord.messages(channel)
        if is_result(message) and not message.ephemeral and not message.deleted
    ]


async def test_an_nsfw_channel_image_is_never_reposted_into_an_sfw_channel(
    discord: DiscordHarness,
) -> None:
    made = await imagine(discord, "a moonlit pool", channel=discord.nsfw, count=1)
    generation_id = generation_id_of(made)

    by_bob = await discord.slash("show", id=generation_id, user=discord.bob)
    assert f"no generation {generation_id}" in (await ephemeral_reply(by_bob)).content
    assert public_results(discord, discord.general) == [], "nothing reached the SFW channel"

    by_owner = await discord.slash("show", id=generation_id, user=discord.alice)
    private = await by_owner.wait_for_followup(is_result, timeout=10)
    assert private.ephemeral and "Only you can see this" in private.content
    assert public_results(discord, discord.general) == []

    upscale = await discord.click(private, "U", user=discord.alice)
    assert "made in an NSFW channel" in (await ephemeral_reply(upscale)).content
    assert public_results(discord, discord.general) == []

    in_nsfw = await discord.slash("show", id=generation_id, user=discord.bob, channel=discord.nsfw)
    reposted = await in_nsfw.wait_for_followup(is_result, timeout=10)
    assert not reposted.ephemeral


async def test_a_dm_generation_is_shown_to_nobody_else(discord: DiscordHarness) -> None:
    made = await imagine(discord, "a private sketch", count=1)
    generation_id = generation_id_of(made)
    db = discord.client.services.db
    async with db.transaction() as conn:  # as if alice had asked in a DM
        await conn.execute(
            "UPDATE generations SET guild_id = NULL, channel_id = 1 WHERE id = ?",
            (generation_id,),
        )
    before = public_results(discord, discord.general)
    by_bob = await discord.slash("show", id=generation_id, user=discord.bob)
    assert f"no generation {generation_id}" in (await ephemeral_reply(by_bob)).content
    info = await discord.click(made, "Info", user=discord.bob)
    assert "made in DMs or on another server" in (await ephemeral_reply(info)).content
    assert public_results(discord, discord.general) == before


async def test_a_published_history_hides_what_its_owner_could_not_post_there(
    discord: DiscordHarness,
) -> None:
    await imagine(discord, "a secret garden", channel=discord.nsfw, count=1)
    await imagine(discord, "a sunny meadow", count=1)
    ix = await discord.slash("history", publish=True)
    page = await ix.wait_for_followup(lambda m: bool(m.embeds), timeout=10)
    assert not page.ephemeral
    descriptions = [embed["description"] for embed in page.embeds]
    assert descriptions == ["a sunny meadow", HIDDEN]
    assert len(page.attachments) == 1, "no thumbnail of the hidden entry"
    assert "url" not in page.embeds[1], "no link to it either"
