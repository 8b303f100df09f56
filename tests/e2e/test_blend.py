"""/blend and image prompts through the fake Discord server, with a tiny IP-Adapter."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.settings import Settings
from pipeline.infotext import parse_parameters
from tests.e2e.conftest import (
    ephemeral_reply,
    generation_id_of,
    imagine,
    is_result,
    labels,
    tiny_settings,
)
from tests.e2e.test_buttons import edit_prompt
from tests.fakediscord import DiscordHarness, Upload
from tests.ip_adapter_files import write_adapter, write_encoder

pytestmark = pytest.mark.e2e


def picture(colour: str) -> Upload:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 64), colour).save(buffer, format="PNG")
    return Upload(f"{colour}.png", buffer.getvalue(), "image/png")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    adapter = write_adapter(tmp_path / "adapter")
    encoder = write_encoder(tmp_path / "encoder")
    return tiny_settings(
        tmp_path,
        default_steps=2,
        default_count=2,
        ip_adapter=str(adapter),
        image_encoder=str(encoder),
    )


async def test_blend_of_two_pictures_gives_a_grid_with_buttons(discord: DiscordHarness) -> None:
    ix = await discord.slash(
        "blend", image1=picture("orange"), image2=picture("teal"), prompt="a fox"
    )
    done = await ix.wait_for_original(is_result, timeout=120)
    assert {"U1", "V1", "Reroll"} <= set(labels(done))
    generation = await discord.client.services.repos.generations.get(generation_id_of(done))
    assert generation is not None
    prompts = generation.request.image_prompts
    assert [(p.weight, p.style) for p in prompts] == [(1.0, False), (1.0, False)]
    assert len({p.image for p in prompts}) == 2
    assert (generation.request.width, generation.request.height) == (512, 512)
    _, _, fields = parse_parameters(generation.images[0].parameters)
    assert fields["ControlNet 1"].startswith("Module: ip-adapter_clip_sd15, Model: ip-adapter_sd15")

    click = await discord.click(done, "Reroll")
    again = await click.wait_for_original(is_result, timeout=120)
    rerolled = await discord.client.services.repos.generations.get(generation_id_of(again))
    assert rerolled is not None and rerolled.request.image_prompts == prompts
    edited = await edit_prompt(discord, again, "a fox", "a fox in the snow")
    remixed = await discord.client.services.repos.generations.get(generation_id_of(edited))
    assert remixed is not None and remixed.request.image_prompts == prompts
    info = await discord.click(again, "Info")
    shown = await ephemeral_reply(info)
    assert "ControlNet 0: " in shown.content and "Weight: 1" in shown.content


async def test_imagine_takes_an_image_prompt_at_its_iw_and_a_style_reference(
    discord: DiscordHarness,
) -> None:
    ix = await discord.slash(
        "imagine",
        prompt="a fox --iw 2",
        image_prompt=picture("orange"),
        style_reference=picture("teal"),
        count=1,
    )
    done = await ix.wait_for_original(is_result, timeout=120)
    generation = await discord.client.services.repos.generations.get(generation_id_of(done))
    assert generation is not None
    prompts = generation.request.image_prompts
    # Midjourney's --iw 2 of its 0-3 is 1.5 of Dreamcord's 0-2.
    assert [(p.weight, p.style) for p in prompts] == [(1.5, False), (1.0, True)]


async def test_sref_names_an_earlier_image_the_user_may_see(discord: DiscordHarness) -> None:
    made = await imagine(discord, "a watercolour sky", count=2)
    generation_id = generation_id_of(made)
    source = await discord.client.services.repos.generations.get(generation_id)
    assert source is not None
    styled = await imagine(discord, f"a fox --sref {generation_id}:2", count=1, timeout=120)
    generation = await discord.client.services.repos.generations.get(generation_id_of(styled))
    assert generation is not None
    (reference,) = generation.request.image_prompts
    assert reference.style and reference.image.endswith(source.images[1].path)

    link = f"https://discord.com/channels/{discord.scene.guild_id}/1/{made.id}"
    linked = await imagine(discord, f"a fox --sref {link}", count=1, timeout=120)
    generation = await discord.client.services.repos.generations.get(generation_id_of(linked))
    assert generation is not None
    assert generation.request.image_prompts[0].image.endswith(source.images[0].path)

    db = discord.client.services.db
    async with db.transaction() as conn:  # as if alice had made it in a DM
        await conn.execute(
            "UPDATE generations SET guild_id = NULL, channel_id = 1 WHERE id = ?",
            (generation_id,),
        )
    by_bob = await discord.slash(
        "imagine", prompt=f"a fox --sref {generation_id}", user=discord.bob
    )
    assert "made in DMs or on another server" in (await ephemeral_reply(by_bob)).content
