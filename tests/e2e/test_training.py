"""/lora train end to end: a zip attachment, the plan, progress edits, the LoRA used in /imagine."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.discord_bot import DreamcordBot
from bot.settings import Settings
from tests.e2e.conftest import ephemeral_reply, generation_id_of, imagine, tiny_settings
from tests.fakediscord import DiscordHarness, StoredMessage, Upload
from tests.pipeline.training.pictures import picture, write_zip

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(
        tmp_path,
        default_steps=3,
        default_count=1,
        training_sample_steps=2,
    )


def pictures_zip(tmp_path: Path, files: dict[str, bytes | str] | None = None) -> Upload:
    if files is None:
        files = {}
        for index in range(2):
            files[f"1_fox/{index}.png"] = picture(256, 256, seed=index)
            files[f"1_fox/{index}.txt"] = "fox, snow"
    path = write_zip(tmp_path / "fox.zip", files)
    return Upload("fox.zip", path.read_bytes())


def is_status(message: StoredMessage) -> bool:
    return "LoRA `foxy`" in message.content and message.content[:1] in "🧪✅"


async def test_a_zip_trains_a_lora_with_progress_and_imagine_then_uses_it(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    ix = await discord.slash(
        "lora train",
        user=discord.admin,
        name="foxy",
        images=pictures_zip(tmp_path),
        trigger="fx",
        steps=4,
        rank=4,
        resolution=256,
    )
    await ix.wait_for_response()
    assert ix.ack_latency is not None and ix.ack_latency < 3
    plan = await ix.wait_for_original(lambda m: "Training plan" in m.content, timeout=60)
    assert plan.ephemeral
    assert "2 pictures" in plan.content and "4 steps in all" in plan.content

    click = await discord.click(plan, "Start training", user=discord.admin)
    await click.wait_for_response()
    status = await discord.wait_for_message(predicate=is_status, timeout=60)
    assert not status.ephemeral
    assert any(b.get("custom_id", "").startswith("dc:tc:") for b in status.buttons())

    done = await discord.wait_for_message(
        predicate=lambda m: m.id == status.id and m.content.startswith("✅"), timeout=300
    )
    assert done.buttons() == []  # no Cancel once it ended
    progress = [state.get("content", "") for state in done.history]
    assert any("step " in text and "/4" in text and "loss" in text for text in progress)
    chart = Image.open(io.BytesIO(done.attachment_data(0)))
    assert chart.format == "PNG" and chart.width <= 400

    samples = await discord.wait_for_message(
        predicate=lambda m: m.content.startswith("Samples of `foxy`"), timeout=60
    )
    grid = Image.open(io.BytesIO(samples.attachment_data(0)))
    assert grid.size == (2 * 256, 2 * 256)  # two seeds, with and without the trigger
    ready = await discord.wait_for_message(
        predicate=lambda m: m.content.startswith("LoRA `foxy` is ready"), timeout=60
    )
    assert ready.attachments[0]["filename"] == "foxy.safetensors"
    assert ready.attachment_data(0)[8:9] == b"{"  # a safetensors header follows its length
    preview = await discord.wait_for_message(
        predicate=lambda m: m.content.startswith("Preview of LoRA `foxy`"), timeout=120
    )
    assert preview.attachments and "failed" not in preview.content

    result = await imagine(discord, "fx, a fox <lora:foxy:1>", timeout=120)
    bot = discord.client
    assert isinstance(bot, DreamcordBot)
    generation = await bot.services.repos.generations.get(generation_id_of(result))
    assert generation is not None
    png = Image.open(bot.services.images.root / generation.images[0].path)
    assert 'Lora hashes: "foxy: ' in png.text["parameters"]


@pytest.mark.parametrize(
    ("files", "options", "expected"),
    [
        ({"1_fox/a.txt": "no pictures here"}, {}, "no pictures"),
        ({"1_fox/a.png": picture(100, 100)}, {}, "256"),
        (None, {"steps": 9_000}, "more than the 3,000"),
    ],
)
async def test_bad_input_is_refused_privately_and_nothing_is_queued(
    discord: DiscordHarness, tmp_path: Path, files, options, expected: str
) -> None:
    ix = await discord.slash(
        "lora train",
        user=discord.admin,
        name="bad",
        images=pictures_zip(tmp_path, files),
        **options,
    )
    reply = await ephemeral_reply(ix, timeout=30)
    assert expected.lower() in reply.content.lower()
    bot = discord.client
    assert await bot.app.training.runs(None) == []  # type: ignore[attr-defined]
    folder = bot.settings.data_dir / "training"  # type: ignore[attr-defined]
    left = [path for path in folder.rglob("*") if not path.is_dir()] if folder.exists() else []
    assert left == []


async def test_a_member_without_an_allowed_role_may_not_train(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    ix = await discord.slash(
        "lora train", user=discord.alice, name="x", images=pictures_zip(tmp_path)
    )
    reply = await ephemeral_reply(ix, timeout=30)
    assert "only this server's admins" in reply.content
