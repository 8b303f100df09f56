"""/controlnet end to end: admins add (attachment, link, drop folder), list, type, remove."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.libraries import DownloadRules
from tests.bot.library_files import write_lora
from tests.control_files import tiny_controlnet, write_diffusers_layout, write_original_layout
from tests.e2e.conftest import ephemeral_reply
from tests.e2e.test_library import answer, bot_of, fields
from tests.fakediscord import DiscordHarness, Upload

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny() -> Any:
    return tiny_controlnet(seed=7)


def controlnet_upload(
    tmp_path: Path, tiny: Any, name: str = "control_v11p_sd15_canny.safetensors"
) -> Upload:
    return Upload(name, write_original_layout(tmp_path / name, tiny).read_bytes())


async def add(discord: DiscordHarness, upload: Upload, **options: Any):
    ix = await discord.slash("controlnet add", user=discord.admin, file=upload, **options)
    await ix.wait_for_response()
    assert ix.ack_latency is not None and ix.ack_latency < 3
    return await answer(ix)


async def test_admin_adds_a_controlnet_by_attachment_and_lists_it(
    discord: DiscordHarness, tmp_path: Path, tiny: Any
) -> None:
    added = await add(discord, controlnet_upload(tmp_path, tiny))
    assert (
        added.ephemeral and added.embeds[0]["title"] == "Added ControlNet control_v11p_sd15_canny"
    )
    found = fields(added)
    assert (found["type"], found["layout"], found["base"]) == ("canny", "original", "sd1")
    assert (found["hint"], found["source"]) == ("3 channels", "attachment")

    listed = await answer(await discord.slash("controlnet list", user=discord.admin))
    assert (
        "✅ `control_v11p_sd15_canny` · type canny · layout original"
        in listed.embeds[0]["description"]
    )
    bot = bot_of(discord)
    entry = await bot.app.libraries.controlnets.info("control_v11p_sd15_canny")
    assert entry.control_type == "canny"
    path, sha256 = bot.app.libraries.controlnets.library.resolve("control_v11p_sd15_canny")
    assert path.is_file() and sha256 == entry.sha256
    audit = await bot.services.repos.audit.list_for_guild(discord.scene.guild_id)
    assert [(row.action, row.user_id) for row in audit] == [("controlnet.add", discord.admin.id)]


async def test_the_type_is_given_or_set_later(
    discord: DiscordHarness, tmp_path: Path, tiny: Any
) -> None:
    name = "diffusion_pytorch_model.safetensors"
    upload = Upload(name, write_diffusers_layout(tmp_path / name, tiny).read_bytes())
    added = await add(discord, upload, name="pose", type="openpose")
    assert (fields(added)["type"], fields(added)["layout"]) == ("openpose", "diffusers")
    typed = await answer(
        await discord.slash("controlnet type", user=discord.admin, name="pose", type="depth")
    )
    assert typed.content == "ControlNet `pose` is now of type `depth`."
    info = await answer(await discord.slash("controlnet info", user=discord.admin, name="POSE"))
    assert fields(info)["type"] == "depth"
    audit = await bot_of(discord).services.repos.audit.list_for_guild(discord.scene.guild_id)
    assert [row.action for row in audit] == ["controlnet.type", "controlnet.add"]


async def test_users_cannot_manage_it_and_other_files_are_refused(
    discord: DiscordHarness, tmp_path: Path, tiny: Any
) -> None:
    denied = await ephemeral_reply(
        await discord.slash(
            "controlnet add", user=discord.alice, file=controlnet_upload(tmp_path, tiny)
        )
    )
    assert "only the bot's owners manage it" in denied.content
    lora = Upload("style.safetensors", write_lora(tmp_path / "style.safetensors").read_bytes())
    refused = await add(discord, lora)
    assert refused.embeds[0]["title"] == "Not added: style.safetensors"
    assert "it is a LoRA, not a ControlNet" in refused.embeds[0]["description"]
    assert await bot_of(discord).services.repos.controlnets.list() == []


async def test_a_link_the_drop_folder_and_removal(
    discord: DiscordHarness, tmp_path: Path, tiny: Any
) -> None:
    name = "control_v11p_sd15_lineart.safetensors"
    data = write_original_layout(tmp_path / name, tiny).read_bytes()
    cdn = discord.server.add_upload(discord.general.id, name, data)
    bot = bot_of(discord)
    # Test only: let the libraries fetch from the fake server's local http CDN.
    bot.app.libraries.downloads = DownloadRules(allowed_hosts=("127.0.0.1",), require_https=False)
    linked = await answer(await discord.slash("controlnet add", user=discord.admin, url=cdn["url"]))
    assert fields(linked)["type"] == "lineart" and fields(linked)["source"] == "url"

    drop = bot.app.libraries.controlnets.drop_folder
    write_original_layout(drop / "control_v11f1e_sd15_tile.safetensors", tiny_controlnet(seed=8))
    scanned = await answer(await discord.slash("controlnet scan", user=discord.admin))
    assert (
        "✅ `control_v11f1e_sd15_tile.safetensors`: added as 'control_v11f1e_sd15_tile'"
        in (scanned.embeds[0]["description"])
    )

    ix = await discord.slash(
        "controlnet remove", user=discord.admin, name="control_v11p_sd15_lineart"
    )
    question = await ix.wait_for_original(lambda m: "Remove" in str(m.buttons()), timeout=10)
    click = await discord.click(question, "Remove", user=discord.admin)
    await click.wait_for_response()
    await ix.wait_for_original(
        lambda m: "Removed ControlNet `control_v11p_sd15_lineart`" in m.content, timeout=10
    )
    assert await bot.services.repos.controlnets.names() == ["control_v11f1e_sd15_tile"]
