"""/model and /style end to end: the server default model, and style presets used by /imagine."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bot.settings import Settings, load_settings
from tests.e2e.conftest import ephemeral_reply, generation_id_of, imagine, job_id_of
from tests.e2e.test_library import add_lora, answer, bot_of, write_tiny_lora
from tests.fakediscord import DiscordHarness, Upload

pytestmark = pytest.mark.e2e


INPAINTING = "sd-v1-5-inpainting"


def write_inpainting_header(path: Path) -> Path:
    """An SD1.5 inpainting checkpoint as far as the model list reads it: a 9-channel conv_in."""
    import torch
    from safetensors.torch import save_file

    conv_in = torch.zeros(320, 9, 3, 3)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": conv_in}, str(path))
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The e2e settings, MODELS_DIR holding a (never loaded) folder and an inpainting file."""
    models = tmp_path / "models"
    (models / "other-model").mkdir(parents=True)
    (models / "other-model" / "model_index.json").write_text("{}")
    write_inpainting_header(models / f"{INPAINTING}.safetensors")
    return load_settings(
        None,
        model="tiny",
        models_dir=models,
        data_dir=tmp_path / "data",
        device="cpu",
        default_size="64x64",
        default_steps=3,
        default_count=1,
        max_queued_per_user=5,
    )


def values(choices: list[dict]) -> list[str]:
    return [choice["value"] for choice in choices]


async def test_models_are_listed_and_admins_set_the_server_default(
    discord: DiscordHarness,
) -> None:
    listed = await answer(await discord.slash("model list", user=discord.alice))
    text = listed.embeds[0]["description"]
    assert "`tiny`" in text and "`other-model`" in text
    assert "`tiny` · tiny — bot default (MODEL), ⭐ used here" in text

    denied = await ephemeral_reply(
        await discord.slash("model default", user=discord.alice, name="other-model")
    )
    assert "only server admins" in denied.content
    unknown = await ephemeral_reply(
        await discord.slash("model default", user=discord.admin, name="nope")
    )
    assert f"there is no model 'nope': use one of tiny, other-model, {INPAINTING}" in (
        unknown.content
    )

    changed = await answer(
        await discord.slash("model default", user=discord.admin, name="Other-Model")
    )
    assert "now uses `other-model`" in changed.content
    bot = bot_of(discord)
    guild = await bot.services.repos.settings.guild(discord.scene.guild_id)
    assert guild["model"] == "other-model"
    listed = await answer(await discord.slash("model list", user=discord.alice))
    assert "`other-model` · diffusers folder — ⭐ used here" in listed.embeds[0]["description"]
    audit = await bot.services.repos.audit.list_for_guild(discord.scene.guild_id)
    assert (audit[0].action, audit[0].detail) == (
        "model.default",
        {"from": None, "to": "other-model"},
    )

    assert values(await discord.autocomplete("imagine", "model", "oth")) == ["other-model"]
    await answer(await discord.slash("model default", user=discord.admin, name="tiny"))
    ix = await discord.slash("imagine", prompt="a fox", user=discord.alice)
    status = await ix.wait_for_original(lambda m: bool(m.buttons()), timeout=30)
    job = await bot.services.repos.jobs.get(job_id_of(status))
    assert job is not None and job.request.model == "tiny"
    wrong = await ephemeral_reply(
        await discord.slash("imagine", prompt="a fox", model="nope", user=discord.alice)
    )
    assert "there is no model 'nope'" in wrong.content


async def test_inpainting_checkpoints_are_listed_as_such_and_refused_for_imagine(
    discord: DiscordHarness,
) -> None:
    listed = await answer(await discord.slash("model list", user=discord.alice))
    assert (
        f"`{INPAINTING}` · SD1.5 inpainting checkpoint file (9 input channels) — "
        "not for /imagine yet"
    ) in listed.embeds[0]["description"]
    says = (
        f"{INPAINTING} is an SD1.5 inpainting checkpoint (9 input channels); it serves image "
        "edits (a mask or a grown canvas); pick a normal checkpoint for /imagine"
    )
    refused = await ephemeral_reply(
        await discord.slash("imagine", prompt="a fox", model=INPAINTING, user=discord.alice)
    )
    assert says in refused.content
    kept = await ephemeral_reply(
        await discord.slash("model default", user=discord.admin, name=INPAINTING)
    )
    assert says in kept.content
    guild = await bot_of(discord).services.repos.settings.guild(discord.scene.guild_id)
    assert "model" not in guild
    assert not await bot_of(discord).services.repos.jobs.list_queued()


async def test_admins_add_styles_and_imagine_applies_them(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    lora = write_tiny_lora(tmp_path / "subject.safetensors", "subject")
    await add_lora(discord, Upload("subject.safetensors", lora.read_bytes()))

    bad = await ephemeral_reply(
        await discord.slash("style add", user=discord.admin, name="film", template="film photo")
    )
    assert "must contain {prompt}" in bad.content
    denied = await ephemeral_reply(
        await discord.slash("style add", user=discord.alice, name="film", template="{prompt}")
    )
    assert "only server admins" in denied.content
    added = await answer(
        await discord.slash(
            "style add",
            user=discord.admin,
            name="film",
            template="film photo of {prompt}, grain",
            negative="blurry",
            loras="subject:0.5",
            size="96x64",
            steps=2,
        )
    )
    assert "Added style `film`" in added.content
    listed = await answer(await discord.slash("style list", user=discord.alice))
    assert listed.embeds[0]["fields"][0]["name"] == "film"
    assert values(await discord.autocomplete("imagine", "style", "fi")) == ["film"]

    result = await imagine(discord, "a fox --no text", style="film", user=discord.alice)
    bot = bot_of(discord)
    generation = await bot.services.repos.generations.get(generation_id_of(result))
    assert generation is not None
    request = generation.request
    assert request.prompt.startswith("film photo of a fox, grain")
    assert request.negative == "blurry, text"
    assert (request.width, request.height, request.steps) == (96, 64, 2)
    png = Image.open(bot.services.images.root / generation.images[0].path)
    assert 'Lora hashes: "subject: ' in png.text["parameters"]

    overridden = await imagine(discord, "a fox", style="film", steps=3, user=discord.alice)
    generation = await bot.services.repos.generations.get(generation_id_of(overridden))
    assert generation is not None and generation.request.steps == 3

    removed = await answer(await discord.slash("style remove", user=discord.admin, name="FILM"))
    assert "Removed style `film`" in removed.content
    gone = await ephemeral_reply(
        await discord.slash("imagine", prompt="a fox", style="film", user=discord.alice)
    )
    assert "there is no style named 'film'" in gone.content
