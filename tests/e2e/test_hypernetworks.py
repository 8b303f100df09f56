"""/hypernetwork end to end: admins add, inspect, rename, disable, remove; users prompt with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.bot.library_files import write_lora
from tests.e2e.conftest import ephemeral_reply, generation_id_of, imagine
from tests.e2e.test_library import answer, bot_of, fields
from tests.fakediscord import DiscordHarness, Upload
from tests.pipeline.lora.hypernet_files import write_hypernetwork

pytestmark = pytest.mark.e2e


def hypernet_upload(tmp_path: Path, name: str = "anime.safetensors", **options) -> Upload:
    return Upload(name, write_hypernetwork(tmp_path / name, **options).read_bytes())


async def add(discord: DiscordHarness, upload: Upload, **options):
    ix = await discord.slash("hypernetwork add", user=discord.admin, file=upload, **options)
    await ix.wait_for_response()
    assert ix.ack_latency is not None and ix.ack_latency < 3
    return await answer(ix)


async def test_admin_adds_a_hypernetwork_and_users_generate_with_it(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    added = await add(discord, hypernet_upload(tmp_path, layer_norm=True))
    assert added.ephemeral and added.embeds[0]["title"] == "Added hypernetwork anime"
    found = fields(added)
    assert (found["base"], found["widths"], found["layers"]) == ("sd1", "32, 64", "1, 2, 1")
    assert (found["activation"], found["layer norm"]) == ("relu", "yes")

    result = await imagine(discord, "a red fox <hypernet:anime:0.8>", user=discord.alice, seed=5)
    plain = await imagine(discord, "a red fox", user=discord.alice, seed=5)
    bot = bot_of(discord)
    images = []
    for message in (result, plain):
        generation = await bot.services.repos.generations.get(generation_id_of(message))
        assert generation is not None
        images.append(Image.open(bot.services.images.root / generation.images[0].path))
    assert images[0].text["parameters"].startswith("a red fox <hypernet:anime:0.8>\n")
    assert "Hypernet" not in images[0].text["parameters"].splitlines()[-1]
    assert images[0].tobytes() != images[1].tobytes()

    audit = await bot.services.repos.audit.list_for_guild(discord.scene.guild_id)
    assert [entry.action for entry in audit] == ["hypernetwork.add"]


async def test_users_cannot_manage_it_and_other_kinds_are_refused(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    denied = await ephemeral_reply(
        await discord.slash("hypernetwork add", user=discord.alice, file=hypernet_upload(tmp_path))
    )
    assert "only the bot's owners manage it" in denied.content
    lora = Upload("style.safetensors", write_lora(tmp_path / "style.safetensors").read_bytes())
    refused = await add(discord, lora)
    assert refused.embeds[0]["title"] == "Not added: style.safetensors"
    assert "not a hypernetwork: add it as a LoRA" in refused.embeds[0]["description"]
    sd1 = await add(discord, hypernet_upload(tmp_path, "sd1.safetensors", widths=(320, 768)))
    assert "no attention layer of the loaded model reads" in sd1.embeds[0]["description"]
    as_lora = await answer(
        await discord.slash(
            "lora add", user=discord.admin, file=hypernet_upload(tmp_path), preview=False
        )
    )
    assert "`hypernetwork add`" in as_lora.embeds[0]["description"]


async def test_list_rename_disable_and_remove_after_confirmation(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    await add(discord, hypernet_upload(tmp_path, "a.safetensors", seed=1))
    await add(discord, hypernet_upload(tmp_path, "b.safetensors", seed=2), name="beta")
    renamed = await answer(
        await discord.slash("hypernetwork rename", user=discord.admin, old="beta", new="gamma")
    )
    assert "to `gamma`" in renamed.content
    await answer(await discord.slash("hypernetwork disable", user=discord.admin, name="a"))
    listed = await answer(
        await discord.slash("hypernetwork list", user=discord.admin, show_disabled=True)
    )
    assert "⛔ `a` (disabled)" in listed.embeds[0]["description"]
    assert "`gamma` · layers 1, 2, 1 · activation relu" in listed.embeds[0]["description"]
    refused = await ephemeral_reply(
        await discord.slash("imagine", prompt="a fox <hypernet:a:0.5>", user=discord.alice)
    )
    assert "unknown hypernetwork 'a'" in refused.content

    ix = await discord.slash("hypernetwork remove", user=discord.admin, name="gamma")
    question = await ix.wait_for_original(lambda m: "Remove" in str(m.buttons()), timeout=10)
    click = await discord.click(question, "Remove", user=discord.admin)
    await click.wait_for_response()
    await ix.wait_for_original(lambda m: "Removed hypernetwork `gamma`" in m.content, timeout=10)
    bot = bot_of(discord)
    assert await bot.services.repos.hypernetworks.names(enabled_only=False) == ["a"]

    write_hypernetwork(bot.app.libraries.hypernetworks.drop_folder / "dropped.safetensors", seed=3)
    scanned = await answer(await discord.slash("hypernetwork scan", user=discord.admin))
    assert "✅ `dropped.safetensors`: added as 'dropped'" in scanned.embeds[0]["description"]
