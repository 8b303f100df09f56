"""/imagine end to end: acknowledgement, progress, the grid and its buttons."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.infotext import parse_parameters
from tests.e2e.conftest import generation_id_of, imagine
from tests.e2e.test_library import bot_of
from tests.fakediscord import DiscordHarness

pytestmark = pytest.mark.e2e

RESULT_LABELS = ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4"]
TOOLS = ["Reroll", "Edit", "Favourite", "Info", "Delete"]


def labels(message) -> list[str]:
    return [button.get("label") for button in message.buttons()]


async def test_imagine_acks_in_time_and_posts_a_labelled_grid(discord: DiscordHarness) -> None:
    ix = await discord.slash("imagine", prompt="a red fox in the snow", user=discord.alice)
    await ix.wait_for_response()
    assert ix.ack_latency is not None and ix.ack_latency < 3
    done = await ix.wait_for_original(lambda m: "U1" in labels(m), timeout=60)
    assert labels(done) == RESULT_LABELS + TOOLS
    grid = Image.open(io.BytesIO(done.attachment_data(0)))
    assert grid.size == (128, 128)
    assert "a red fox in the snow" in done.content
    assert f"<@{discord.alice.id}>" in done.content
    contents = [state.get("content", "") for state in done.history]
    assert any("Queued" in content for content in contents), "the queue position came first"
    assert any("step" in content for content in contents), "then progress"


async def test_clip_skip_from_the_flag_or_settings_reaches_the_image(
    discord: DiscordHarness,
) -> None:
    """/imagine has no clip_skip option (its 25 options went to ControlNet): the flag sets it."""
    bot = bot_of(discord)

    async def clip_skip_of(message) -> str | None:
        generation = await bot.services.repos.generations.get(generation_id_of(message))
        assert generation is not None
        png = Image.open(bot.services.images.root / generation.images[0].path)
        return parse_parameters(png.text["parameters"])[2].get("Clip skip")

    assert (
        await clip_skip_of(await imagine(discord, "a fox --clip-skip 3", user=discord.alice)) == "3"
    )
    ix = await discord.slash("settings", clip_skip=2, user=discord.bob)
    await ix.wait_for_response()
    assert await clip_skip_of(await imagine(discord, "a fox", user=discord.bob)) == "2"
    assert await clip_skip_of(await imagine(discord, "a fox", user=discord.alice)) is None


async def test_hires_options_and_saved_hires_settings_reach_the_image(
    discord: DiscordHarness,
) -> None:
    bot = bot_of(discord)

    async def hires_of(message) -> tuple[tuple[int, int], dict[str, str]]:
        generation = await bot.services.repos.generations.get(generation_id_of(message))
        assert generation is not None
        png = Image.open(bot.services.images.root / generation.images[0].path)
        fields = parse_parameters(png.text["parameters"])[2]
        keys = ("Hires upscale", "Hires steps", "Hires upscaler", "Denoising strength")
        return png.size, {key: fields[key] for key in keys if key in fields}

    options = {"count": 1, "steps": 2, "hires_scale": 1.5, "hires_steps": 1}
    size, fields = await hires_of(
        await imagine(discord, "a fox", user=discord.alice, hires_upscaler="Lanczos", **options)
    )
    assert size == (96, 96)  # the 64x64 base at 1.5x
    assert fields == {
        "Hires upscale": "1.5",
        "Hires steps": "1",
        "Hires upscaler": "Lanczos",
        "Denoising strength": "0.35",
    }
    saved = await discord.slash(
        "settings", hires=True, hires_scale=1.25, hires_denoise=0.7, user=discord.bob
    )
    await saved.wait_for_response()
    size, fields = await hires_of(
        await imagine(discord, "a fox", user=discord.bob, count=1, steps=2, hires_steps=1)
    )
    assert size == (80, 80)
    assert fields["Hires upscale"] == "1.25" and fields["Denoising strength"] == "0.7"
    off = await imagine(discord, "a fox", user=discord.bob, count=1, steps=2, hires=False)
    assert (await hires_of(off))[1] == {}
