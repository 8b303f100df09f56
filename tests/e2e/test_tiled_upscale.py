"""The tiled upscale buttons end to end: U1, then Upscale 2x Creative / Subtle / 4x, with the
server's /policy settings, and a size over MAX_UPSCALE_PIXELS refused before anything queues."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.guild import Actor
from bot.settings import Settings
from pipeline.request import ControlUnit
from tests.control_files import tiny_controlnet, write_diffusers_layout
from tests.e2e.conftest import (
    ephemeral_reply,
    generation_id_of,
    imagine,
    is_result,
    labels,
    tiny_settings,
)
from tests.fakediscord import DiscordHarness, StoredMessage

pytestmark = pytest.mark.e2e

TILED_LABELS = ["Upscale 2x Subtle", "Upscale 2x Creative", "Upscale 4x"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(
        tmp_path,
        default_steps=3,
        default_count=2,
        max_upscale_pixels=512 * 512,
    )


def size_of(message: StoredMessage) -> tuple[int, int]:
    return Image.open(io.BytesIO(message.attachment_data(0))).size


async def test_u1_then_upscale_2x_creative_gives_a_2x_image_with_buttons(
    discord: DiscordHarness,
) -> None:
    ix = await discord.slash("policy set", user=discord.admin, upscale_tile=256, upscale_steps=4)
    shown = " ".join(str(f) for e in (await ephemeral_reply(ix)).embeds for f in e["fields"])
    assert "256 px" in shown

    grid = await imagine(discord, "a lighthouse")
    assert not set(TILED_LABELS) & set(labels(grid)), "a first grid offers only U and V"
    upscaled = await (await discord.click(grid, "U1")).wait_for_original(is_result, timeout=60)
    assert size_of(upscaled) == (128, 128)
    assert labels(upscaled)[:5] == ["U", "V", *TILED_LABELS]

    click = await discord.click(upscaled, "Upscale 2x Creative")
    creative = await click.wait_for_original(is_result, timeout=120)
    assert size_of(creative) == (256, 256), "2x of the 128x128 upscale"
    assert labels(creative)[:5] == ["U", "V", *TILED_LABELS], "buttons to go on"
    generations = discord.client.services.repos.generations
    made = await generations.get(generation_id_of(creative))
    source = await generations.get(generation_id_of(upscaled))
    assert made.request.tiles is not None and made.request.tiles.size == 256, "the server's tile"
    assert made.request.steps == 4, "the server's steps"
    assert made.request.strength == 0.45, "Creative's default denoise"
    assert made.request.parent_image_id == source.images[0].id, "lineage to the upscale"
    assert made.request.controls == (), "no tile ControlNet installed: unguided"


async def test_an_upscale_over_the_limit_is_refused_with_the_largest_allowed(
    discord: DiscordHarness,
) -> None:
    grid = await imagine(discord, "a harbour", count=1, size="256x256", steps=1)
    upscaled = await (await discord.click(grid, "U")).wait_for_original(is_result, timeout=120)
    db = discord.client.services.repos.jobs

    click = await discord.click(upscaled, "Upscale 4x")
    refusal = await ephemeral_reply(click)
    assert "the largest allowed is 512x512" in refusal.content
    assert click.original is None or click.original.deleted, "nothing is left in the channel"
    assert await db.list_queued() == [], "nothing queued"


async def test_upscale_2x_subtle_is_guided_by_the_tile_controlnet_with_the_source_as_map(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    library = discord.client.app.libraries.controlnets
    for seed, name in enumerate(("tiny-canny", "tiny-tile")):  # types guessed from the names
        path = write_diffusers_layout(tmp_path / f"{name}.safetensors", tiny_controlnet(seed))
        await library.add_file(path, Actor(guild_id=None, user_id=None), name=name)
    grid = await imagine(discord, "a lighthouse", count=1)
    upscaled = await (await discord.click(grid, "U")).wait_for_original(is_result, timeout=60)
    click = await discord.click(upscaled, "Upscale 2x Subtle")
    subtle = await click.wait_for_original(is_result, timeout=120)
    assert size_of(subtle) == (256, 256)
    generations = discord.client.services.repos.generations
    made = await generations.get(generation_id_of(subtle))
    source = await generations.get(generation_id_of(upscaled))
    picture = discord.client.services.images.root / source.images[0].path
    assert made.request.controls == (ControlUnit("tiny-tile", str(picture), preprocessor="none"),)
