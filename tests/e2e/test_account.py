"""A user's own things end to end: /settings, /history and /favourites paging, /show."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ephemeral_reply, generation_id_of, imagine, is_result, labels
from tests.fakediscord import DiscordHarness, StoredMessage

pytestmark = pytest.mark.e2e


def fields(message: StoredMessage) -> dict[str, str]:
    return {f["name"]: f["value"] for embed in message.embeds for f in embed.get("fields", [])}


async def test_settings_are_shown_saved_and_used_by_imagine(discord: DiscordHarness) -> None:
    shown = await ephemeral_reply(await discord.slash("settings"))
    assert fields(shown)["steps (bot)"] == "3"

    bad = await discord.slash("settings", size="65x64")
    assert "multiples of 8" in (await ephemeral_reply(bad)).content
    assert await discord.client.services.repos.settings.user(discord.alice.id) == {}

    saved = await ephemeral_reply(
        await discord.slash("settings", size="96x64", steps=2, count=1, negative="ugly")
    )
    assert fields(saved)["steps (yours)"] == "2"

    result = await imagine(discord, "a pear")
    generation = await discord.client.services.repos.generations.get(generation_id_of(result))
    request = generation.request
    assert (request.steps, request.count, request.negative) == (2, 1, "ugly")
    assert (request.width, request.height) == (96, 64)

    reset = await ephemeral_reply(await discord.slash("settings", reset=True))
    assert fields(reset)["steps (bot)"] == "3"


async def test_history_pages_newest_first_and_only_its_owner_pages_it(
    discord: DiscordHarness,
) -> None:
    prompts = [f"picture number {n}" for n in range(7)]
    for prompt in prompts:
        await imagine(discord, prompt, count=1)
    ix = await discord.slash("history")
    first = await ephemeral_reply(ix)
    assert "Your history** · page 1" in first.content
    assert first.embeds[0]["description"] == "picture number 6"
    assert len(first.embeds) == 5 and len(first.attachments) == 5, "a thumbnail per entry"
    assert all(e["thumbnail"]["url"] for e in first.embeds)
    assert first.embeds[0]["url"].startswith("https://discord.com/channels/")
    assert labels(first) == ["◀ Previous", "Next ▶", "Publish"]

    await discord.click(first, "Next ▶")
    second = await discord.wait_until(
        lambda: (m := discord.server.message(first.id)) and "page 2" in m.content and m,
        what="page 2",
    )
    assert [e["description"] for e in second.embeds] == ["picture number 1", "picture number 0"]

    published = await discord.click(second, "Publish")
    public = await published.wait_for_followup(lambda m: bool(m.embeds), timeout=10)
    assert not public.ephemeral and "page 2" in public.content
    refused = await discord.click(second, "◀ Previous", user=discord.bob)
    assert "only" in (await ephemeral_reply(refused)).content


async def test_favourites_list_pages_and_empty_list_says_how_to_add(
    discord: DiscordHarness,
) -> None:
    empty = await ephemeral_reply(await discord.slash("favourites"))
    assert "no favourites yet" in empty.content

    grid = await imagine(discord, "six kittens", count=4)
    other = await imagine(discord, "two puppies", count=2)
    generations = discord.client.services.repos.generations
    repos = discord.client.services.repos.favourites
    for message in (grid, other):
        for image in (await generations.get(generation_id_of(message))).images:
            await repos.toggle(discord.alice.id, image.id)

    first = await ephemeral_reply(await discord.slash("favourites"))
    assert "page 1 of 2" in first.content
    assert first.embeds[0]["title"] == f"Image 2 of generation {generation_id_of(other)}"
    await discord.click(first, "Next ▶")
    second = await discord.wait_until(
        lambda: (m := discord.server.message(first.id)) and "page 2" in m.content and m,
        what="page 2",
    )
    assert len(second.embeds) == 1
    assert second.embeds[0]["title"] == f"Image 1 of generation {generation_id_of(grid)}"


async def test_show_reposts_a_generation_with_working_buttons(discord: DiscordHarness) -> None:
    original = await imagine(discord, "a red kite", count=2, seed=99)
    generation_id = generation_id_of(original)
    ix = await discord.slash("show", id=generation_id, user=discord.bob)
    posted = await ix.wait_for_original(is_result, timeout=10)
    assert not posted.ephemeral and "a red kite" in posted.content
    assert labels(posted)[:4] == ["U1", "U2", "V1", "V2"]
    info = await discord.click(posted, "Info", user=discord.bob)
    assert "Seed: 99" in (await ephemeral_reply(info)).content

    missing = await discord.slash("show", id=424242)
    assert "no generation 424242" in (await ephemeral_reply(missing)).content
