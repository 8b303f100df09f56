"""Every button under a result, end to end: U, V, Reroll, Edit, Favourite, Info, Delete."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.settings import Settings
from tests.e2e.conftest import (
    ephemeral_reply,
    generation_id_of,
    imagine,
    is_result,
    labels,
    make_bot,
)
from tests.fakediscord import DiscordHarness, StoredMessage

pytestmark = pytest.mark.e2e


def seeds_in(message) -> str:
    return message.content.splitlines()[-1]


async def test_upscale_makes_a_double_size_image_with_recorded_lineage(
    discord: DiscordHarness,
) -> None:
    grid = await imagine(discord, "a lighthouse", count=2)
    click = await discord.click(grid, "U2")
    upscaled = await click.wait_for_original(is_result, timeout=60)
    image = Image.open(io.BytesIO(upscaled.attachment_data(0)))
    assert image.size == (128, 128), "a 64x64 source upscales to 128x128"
    assert "(Upscale)" in upscaled.content
    assert labels(upscaled)[:2] == ["U", "V"], "one image: buttons without numbers"

    info = await discord.click(upscaled, "Info")
    text = (await ephemeral_reply(info)).content
    assert "Seed:" in text
    assert "Lineage:" in text, "Info shows where the upscale came from"
    parent = discord.client.services.repos.generations
    source = await parent.get(generation_id_of(grid))
    assert f"image {source.images[1].id}" in text


async def test_variations_make_four_images_from_one(discord: DiscordHarness) -> None:
    grid = await imagine(discord, "a teapot", count=1)
    click = await discord.click(grid, "V")
    varied = await click.wait_for_original(is_result, timeout=60)
    assert "(Variations)" in varied.content
    assert labels(varied)[:4] == ["U1", "U2", "U3", "U4"]
    generation = await discord.client.services.repos.generations.get(generation_id_of(varied))
    assert len(generation.images) == 4
    assert all(image.variation_seed is not None for image in generation.images)


async def test_reroll_runs_the_same_prompt_with_new_seeds(discord: DiscordHarness) -> None:
    grid = await imagine(discord, "a teapot", count=2, seed=1234)
    click = await discord.click(grid, "Reroll")
    again = await click.wait_for_original(is_result, timeout=60)
    assert "(Reroll)" in again.content and "a teapot" in again.content
    repos = discord.client.services.repos.generations
    old = await repos.get(generation_id_of(grid))
    new = await repos.get(generation_id_of(again))
    assert {i.seed for i in old.images}.isdisjoint({i.seed for i in new.images})


async def edit_prompt(
    discord: DiscordHarness, grid: StoredMessage, old: str, new: str
) -> StoredMessage:
    """Click Edit, find the prompt field prefilled with `old`, submit `new`: the new result."""
    click = await discord.click(grid, "Edit")
    await click.wait_for_response()
    modal = click.modal
    assert modal is not None
    inputs = {
        c["custom_id"]: c.get("value")
        for row in modal["components"]
        for c in row.get("components", [row.get("component", {})])
    }
    prompt_id = next(key for key, value in inputs.items() if value == old)
    submitted = await discord.submit_modal(click, {prompt_id: new})
    return await submitted.wait_for_original(is_result, timeout=60)


async def test_edit_opens_a_prefilled_modal_and_runs_the_new_prompt(
    discord: DiscordHarness,
) -> None:
    grid = await imagine(discord, "a blue teapot", count=1)
    edited = await edit_prompt(discord, grid, "a blue teapot", "a green teapot")
    assert "a green teapot" in edited.content
    generation = await discord.client.services.repos.generations.get(generation_id_of(edited))
    assert generation.request.prompt == "a green teapot"


async def test_favourite_toggles_one_image_and_offers_a_chooser_for_a_grid(
    discord: DiscordHarness,
) -> None:
    single = await imagine(discord, "a single cat", count=1)
    first = await discord.click(single, "Favourite")
    assert "added to your favourites" in (await ephemeral_reply(first)).content
    second = await discord.click(single, "Favourite")
    assert "removed from your favourites" in (await ephemeral_reply(second)).content

    grid = await imagine(discord, "four cats", count=4)
    chooser_click = await discord.click(grid, "Favourite")
    chooser = await ephemeral_reply(chooser_click)
    assert labels(chooser) == ["☆ 1", "☆ 2", "☆ 3", "☆ 4"]
    star = await discord.click(chooser, "☆ 3")
    assert "Image 3" in (await ephemeral_reply(star)).content
    favourites = await discord.client.services.repos.favourites.list(discord.alice.id)
    generation = await discord.client.services.repos.generations.get(generation_id_of(grid))
    assert [f.image.id for f in favourites] == [generation.images[2].id]


async def test_the_chooser_of_a_grid_shows_the_users_existing_favourites(
    discord: DiscordHarness,
) -> None:
    single = await imagine(discord, "a single cat", count=1)
    await ephemeral_reply(await discord.click(single, "Favourite"))
    grid = await imagine(discord, "four cats", count=4)

    chooser = await ephemeral_reply(await discord.click(grid, "Favourite"))
    assert labels(chooser) == ["☆ 1", "☆ 2", "☆ 3", "☆ 4"], "another grid's favourite is not here"
    await ephemeral_reply(await discord.click(chooser, "☆ 2"))
    again = await ephemeral_reply(await discord.click(grid, "Favourite"))
    assert labels(again) == ["☆ 1", "★ 2", "☆ 3", "☆ 4"]


async def test_info_shows_the_parameters_with_the_seed(discord: DiscordHarness) -> None:
    grid = await imagine(discord, "a lantern", count=1, seed=4242)
    click = await discord.click(grid, "Info")
    await click.wait_for_response()
    assert click.ack_latency is not None and click.ack_latency < 3
    reply = await ephemeral_reply(click)
    assert "Seed: 4242" in reply.content
    assert "a lantern" in reply.content


async def test_delete_is_for_the_requester_only(discord: DiscordHarness) -> None:
    grid = await imagine(discord, "a bridge", count=1, user=discord.alice)
    refused = await discord.click(grid, "Delete", user=discord.bob)
    assert "only the person who asked" in (await ephemeral_reply(refused)).content
    assert not discord.server.message(grid.id).deleted

    deleted = await discord.click(grid, "Delete", user=discord.alice)
    assert "Deleted" in (await ephemeral_reply(deleted)).content
    assert discord.server.message(grid.id).deleted
    generation = await discord.client.services.repos.generations.get(generation_id_of(grid))
    assert generation.deleted_at is not None


async def test_a_button_of_an_unknown_generation_says_it_is_gone(
    discord: DiscordHarness,
) -> None:
    grid = await imagine(discord, "a ghost", count=1)
    generation_id = generation_id_of(grid)
    # Rewrite the stored message so its Info button names a generation that never existed.
    for button in discord.server.message(grid.id).buttons():
        button["custom_id"] = button["custom_id"].replace(f":{generation_id}", ":999999")
    click = await discord.click(grid, "Info")
    assert "no longer available" in (await ephemeral_reply(click)).content


async def test_buttons_of_an_old_message_work_after_a_restart(
    discord: DiscordHarness, settings: Settings
) -> None:
    grid = await imagine(discord, "a windmill", count=1, seed=77)
    async with discord.restart(make_bot(settings)) as bot:
        assert bot is not discord.server  # a new process-level client
        info = await discord.click(grid, "Info")
        assert "Seed: 77" in (await ephemeral_reply(info)).content
        reroll = await discord.click(grid, "Reroll")
        again = await reroll.wait_for_original(is_result, timeout=60)
        assert "a windmill" in again.content


async def test_edit_keeps_the_model_clip_skip_and_highres_fix_of_the_result(
    discord: DiscordHarness,
) -> None:
    grid = await imagine(
        discord,
        "a blue teapot --clip-skip 2",
        count=1,
        model="tiny",
        hires_scale=1.5,
        hires_steps=2,
        hires_denoise=0.4,
    )
    edited = await edit_prompt(discord, grid, "a blue teapot", "a green teapot")
    repos = discord.client.services.repos.generations
    before = (await repos.get(generation_id_of(grid))).request
    after = (await repos.get(generation_id_of(edited))).request
    assert after.prompt == "a green teapot"
    assert (after.model, after.clip_skip) == ("tiny", 2)
    assert after.hires == before.hires
    assert (after.hires.scale, after.hires.steps, after.hires.denoise) == (1.5, 2, 0.4)
