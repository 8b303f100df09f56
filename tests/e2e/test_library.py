"""/lora and /embedding end to end: admins add (attachment, link), list, rename, disable, remove."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.discord_bot import DreamcordBot
from bot.libraries import DownloadRules
from tests.bot.library_files import write_crafted_loras, write_embedding, write_lora
from tests.e2e.conftest import ephemeral_reply, generation_id_of, imagine
from tests.fakediscord import DiscordHarness, InteractionRecord, StoredMessage, Upload
from tests.pipeline.lora import make_files as mf

pytestmark = pytest.mark.e2e


@functools.cache
def _tiny_targets() -> tuple[list, list]:
    from pipeline.tiny import build_tiny_components

    tiny = build_tiny_components()
    return mf.unet_targets(tiny["unet"]), mf.text_targets(tiny["text_encoder"])


def write_tiny_lora(path: Path, output_name: str = "tiny-subject", seed: int = 0) -> Path:
    """A LoRA that fits the tiny model's modules, so it can really be used to generate."""
    unet, text = _tiny_targets()
    tensors = mf.kohya_tensors(unet, text, mf.lora_parts, rank=4, alpha=2.0, seed=seed)
    metadata = mf.tag_metadata({"sks dog": 12, "grass": 3}) | {"ss_output_name": output_name}
    return mf.write(path, tensors, metadata)


def lora_upload(tmp_path: Path, name: str = "style.safetensors", seed: int = 0, **kw) -> Upload:
    return Upload(name, write_lora(tmp_path / name, seed=seed, **kw).read_bytes())


def bot_of(discord: DiscordHarness) -> DreamcordBot:
    assert isinstance(discord.client, DreamcordBot)
    return discord.client


def fields(message: StoredMessage) -> dict[str, str]:
    return {field["name"]: field["value"] for field in message.embeds[0].get("fields", [])}


async def answer(ix: InteractionRecord) -> StoredMessage:
    """The finished ephemeral answer of an admin command (content or embed, not thinking)."""
    return await ix.wait_for_original(
        lambda m: not m.loading and (bool(m.embeds) or "Downloading" not in m.content),
        timeout=20,
    )


async def add_lora(discord: DiscordHarness, upload: Upload, **options) -> StoredMessage:
    ix = await discord.slash("lora add", user=discord.admin, file=upload, preview=False, **options)
    return await answer(ix)


async def test_admin_adds_a_lora_from_an_attachment_and_users_generate_with_it(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    lora = write_tiny_lora(tmp_path / "style.safetensors", "test-subject")
    upload = Upload("style.safetensors", lora.read_bytes())
    ix = await discord.slash("lora add", user=discord.admin, file=upload, weight=0.7)
    await ix.wait_for_response()
    assert ix.ack_latency is not None and ix.ack_latency < 3
    added = await answer(ix)
    assert added.ephemeral and added.embeds[0]["title"] == "Added LoRA test-subject"
    found = fields(added)
    assert (found["kind"], found["base"], found["rank"]) == ("lora", "sd1", "4")
    assert int(found["modules"]) > 10
    assert found["triggers"] == "sks dog, grass" and found["weight"] == "0.7"

    # The preview: weights 0, 0.5 and 1 in one labelled grid, posted in the channel.
    preview = await discord.wait_for_message(
        discord.general, lambda m: m.content.startswith("Preview of LoRA"), timeout=60
    )
    assert "test-subject" in preview.content and "0, 0.5, 1" in preview.content
    assert "failed" not in preview.content
    grid = Image.open(io.BytesIO(preview.attachment_data(0)))
    assert grid.width == 3 * 256

    result = await imagine(discord, "a dog on grass <lora:test-subject:0.8>", user=discord.alice)
    bot = bot_of(discord)
    generation = await bot.services.repos.generations.get(generation_id_of(result))
    assert generation is not None
    png = Image.open(bot.services.images.root / generation.images[0].path)
    assert 'Lora hashes: "test-subject: ' in png.text["parameters"]

    history = await answer(await discord.slash("lora history", user=discord.admin))
    assert "lora.add" in history.embeds[0]["description"]
    audit = await bot.services.repos.audit.list_for_guild(discord.scene.guild_id)
    assert [entry.action for entry in audit] == ["lora.add"]
    assert audit[0].user_id == discord.admin.id and audit[0].target == "test-subject"


async def test_admin_adds_a_lora_from_a_link_and_bad_links_are_refused(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    data = write_lora(tmp_path / "linked.safetensors", output_name="linked").read_bytes()
    cdn = discord.server.add_upload(discord.general.id, "linked.safetensors", data)

    refused = await answer(await discord.slash("lora add", user=discord.admin, url=cdn["url"]))
    assert "not an https:// link" in refused.embeds[0]["description"]
    elsewhere = await answer(
        await discord.slash("lora add", user=discord.admin, url="https://example.com/a.safetensors")
    )
    assert "allowed are civitai.com" in elsewhere.embeds[0]["description"]

    # Test only: let the libraries fetch from the fake server's local http CDN.
    libraries = bot_of(discord).app.libraries
    libraries.downloads = DownloadRules(allowed_hosts=("127.0.0.1",), require_https=False)
    ix = await discord.slash("lora add", user=discord.admin, url=cdn["url"], preview=False)
    added = await answer(ix)
    assert added.embeds[0]["title"] == "Added LoRA linked"
    assert fields(added)["source"] == "url"

    again = await answer(await discord.slash("lora add", user=discord.admin, url=cdn["url"]))
    assert "already in the LoRA library as 'linked'" in again.embeds[0]["description"]


async def test_users_cannot_manage_the_library_and_bad_files_are_refused_with_reasons(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    denied = await ephemeral_reply(
        await discord.slash("lora add", user=discord.alice, file=lora_upload(tmp_path))
    )
    assert "only the bot's owners manage it" in denied.content
    assert not (await bot_of(discord).services.repos.loras.names(enabled_only=False))

    good = write_lora(tmp_path / "good.safetensors")
    bad_files = {
        "pickle.safetensors": mf.write_pickle(tmp_path / "pickle.safetensors"),
        "cut.safetensors": mf.truncate(good, tmp_path / "cut.safetensors"),
        "xl.safetensors": mf.write(tmp_path / "xl.safetensors", mf.sdxl_tensors()),
    }
    reasons = {}
    for name, path in bad_files.items():
        message = await add_lora(discord, Upload(name, path.read_bytes()))
        assert message.embeds[0]["title"] == f"Not added: {name}"
        reasons[name] = message.embeds[0]["description"]
    assert "pickle" in reasons["pickle.safetensors"].lower()
    assert "truncated" in reasons["cut.safetensors"] or "incomplete" in reasons["cut.safetensors"]
    assert "SDXL" in reasons["xl.safetensors"]
    not_safetensors = await add_lora(discord, Upload("model.ckpt", b"\x80\x04"))
    assert "only .safetensors" in not_safetensors.embeds[0]["description"]

    embedding = write_embedding(tmp_path / "grainy.safetensors")
    ix = await discord.slash(
        "embedding add",
        user=discord.admin,
        file=Upload("grainy.safetensors", embedding.read_bytes()),
    )
    assert fields(await answer(ix))["vectors"] == "2"
    as_lora = await add_lora(discord, Upload("emb.safetensors", embedding.read_bytes()))
    assert "add it as an embedding" in as_lora.embeds[0]["description"]


async def test_list_rename_disable_enable_and_remove_after_confirmation(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    await add_lora(discord, lora_upload(tmp_path, "a.safetensors", 1, output_name="alpha"))
    await add_lora(discord, lora_upload(tmp_path, "b.safetensors", 2, output_name="beta"))
    clash = await add_lora(discord, lora_upload(tmp_path, "c.safetensors", 3, output_name="beta"))
    assert "for example 'beta-2'" in clash.embeds[0]["description"]

    renamed = await answer(
        await discord.slash("lora rename", user=discord.admin, old="beta", new="gamma")
    )
    assert "to `gamma`" in renamed.content
    await answer(await discord.slash("lora disable", user=discord.admin, name="alpha"))

    listed = await answer(await discord.slash("lora list", user=discord.admin))
    assert "`gamma`" in listed.embeds[0]["description"]
    assert "alpha" not in listed.embeds[0]["description"]
    assert "1 disabled hidden" in listed.embeds[0]["footer"]["text"]
    everything = await answer(
        await discord.slash("lora list", user=discord.admin, show_disabled=True)
    )
    assert "⛔ `alpha` (disabled)" in everything.embeds[0]["description"]

    admin_names = await discord.autocomplete("lora enable", "name", "a", user=discord.admin)
    assert [choice["value"] for choice in admin_names] == ["alpha", "gamma"]
    user_names = await discord.autocomplete("imagine", "lora", "", user=discord.alice)
    assert [choice["value"] for choice in user_names] == ["gamma"]

    refused = await ephemeral_reply(
        await discord.slash("imagine", prompt="a fox <lora:alpha:0.5>", user=discord.alice)
    )
    assert "unknown LoRA 'alpha'" in refused.content
    await answer(await discord.slash("lora enable", user=discord.admin, name="alpha"))

    ix = await discord.slash("lora remove", user=discord.admin, name="gamma")
    question = await ix.wait_for_original(lambda m: "Remove" in str(m.buttons()), timeout=10)
    assert "60 seconds" in question.content
    click = await discord.click(question, "Remove", user=discord.admin)
    await click.wait_for_response()
    done = await ix.wait_for_original(lambda m: "Removed" in m.content, timeout=10)
    assert not done.buttons()
    bot = bot_of(discord)
    assert await bot.services.repos.loras.names(enabled_only=False) == ["alpha"]

    drop = bot.app.libraries.loras.drop_folder
    write_lora(drop / "dropped.safetensors", seed=4, output_name="dropped")
    mf.write_pickle(drop / "evil.safetensors")
    scanned = await answer(await discord.slash("lora scan", user=discord.admin))
    report = scanned.embeds[0]["description"]
    assert "✅ `dropped.safetensors`: added as 'dropped'" in report
    assert "⛔ `evil.safetensors`: left in place" in report
    actions = [
        entry.action
        for entry in await bot.services.repos.audit.list_for_guild(discord.scene.guild_id)
    ]
    changes = ["lora.scan", "lora.remove", "lora.enable", "lora.disable", "lora.rename"]
    assert actions == [*changes, "lora.add", "lora.add"]


async def test_an_unknown_lora_in_a_prompt_gets_did_you_mean_before_anything_is_queued(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    await add_lora(discord, lora_upload(tmp_path))
    ix = await discord.slash("imagine", prompt="a dog <lora:test-subjct:0.8>", user=discord.alice)
    refused = await ephemeral_reply(ix)
    assert "unknown LoRA 'test-subjct'" in refused.content
    assert "did you mean 'test-subject'?" in refused.content
    option = await ephemeral_reply(
        await discord.slash("imagine", prompt="a dog", lora="test-subjet", user=discord.alice)
    )
    assert "did you mean 'test-subject'?" in option.content
    jobs = bot_of(discord).app.jobs.jobs_of(discord.alice.id)
    assert jobs == []


async def test_crafted_files_sent_to_lora_add_are_refused_with_what_is_wrong(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    for path in write_crafted_loras(tmp_path):
        if path.stem == "nested-tags":  # hostile training metadata is only ignored
            continue
        message = await add_lora(discord, Upload(path.name, path.read_bytes()))
        assert message.embeds[0]["title"] == f"Not added: {path.name}"
        assert "cannot be added" in message.embeds[0]["description"]
