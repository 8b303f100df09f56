"""The safety checker end to end: a flagged result is spoilered or withheld outside NSFW
channels, allowed in them, and `/show` applies the same rule wherever it posts again.

The deployment runs SAFETY_CHECKER=spoiler with a miniature checker whose thresholds flag
every image (tests/pipeline/tiny_safety.py), loaded from its folder as a real one is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings
from tests.e2e.conftest import ephemeral_reply, generation_id_of, imagine
from tests.e2e.test_library import write_tiny_lora
from tests.fakediscord import DiscordHarness, InteractionRecord, StoredMessage, Upload
from tests.pipeline.tiny_safety import save_tiny_checker

pytestmark = pytest.mark.e2e

WITHHELD_ONE = "1 image was withheld by the safety checker"


@pytest.fixture(scope="module")
def flags_everything(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checker(tmp_path_factory.mktemp("checker"), flags_every_image=True)


@pytest.fixture
def settings(settings: Settings, flags_everything: Path) -> Settings:
    return settings.model_copy(
        update={
            "default_count": 1,
            "safety_checker": "spoiler",
            "safety_checker_model": str(flags_everything),
        }
    )


def attachment_names(message: StoredMessage) -> list[str]:
    return [attachment["filename"] for attachment in message.attachments]


def has_result_buttons(message: StoredMessage) -> bool:
    """A finished result, with its grid or with every image withheld."""
    return any(str(b.get("custom_id", "")).startswith("dc:u:") for b in message.buttons())


async def finished(ix: InteractionRecord) -> StoredMessage:
    return await ix.wait_for_original(has_result_buttons, timeout=60)


async def test_a_flagged_result_is_a_spoiler_outside_nsfw_channels_and_plain_inside(
    discord: DiscordHarness,
) -> None:
    sfw = await imagine(discord, "a lighthouse", count=2)
    [name] = attachment_names(sfw)
    assert name.startswith("SPOILER_")
    assert "marked as a spoiler by the safety checker" in sfw.content

    nsfw = await imagine(discord, "a lighthouse", count=2, channel=discord.nsfw)
    [name] = attachment_names(nsfw)
    assert not name.startswith("SPOILER_")
    assert "safety checker" not in nsfw.content

    generation = await discord.client.services.repos.generations.get(generation_id_of(sfw))
    assert [image.flagged for image in generation.images] == [True, True]


async def test_block_mode_withholds_a_flagged_image_with_a_note(discord: DiscordHarness) -> None:
    ix = await discord.slash("policy set", user=discord.admin, safety="block")
    saved = await ephemeral_reply(ix)
    assert {"name": "safety", "value": "block", "inline": False} in saved.embeds[0]["fields"]

    blocked = await finished(await discord.slash("imagine", prompt="a lighthouse"))
    assert blocked.attachments == []
    assert WITHHELD_ONE in blocked.content

    allowed = await imagine(discord, "a lighthouse", channel=discord.nsfw)
    assert len(allowed.attachments) == 1 and WITHHELD_ONE not in allowed.content


async def test_show_applies_the_verdict_where_it_posts_again(discord: DiscordHarness) -> None:
    made = await imagine(discord, "a lighthouse")
    generation_id = generation_id_of(made)

    shown = await finished(await discord.slash("show", id=generation_id))
    [name] = attachment_names(shown)
    assert name.startswith("SPOILER_")

    await ephemeral_reply(await discord.slash("policy set", user=discord.admin, safety="block"))
    withheld = await finished(await discord.slash("show", id=generation_id))
    assert withheld.attachments == [] and WITHHELD_ONE in withheld.content

    again = await finished(await discord.slash("show", id=generation_id, channel=discord.nsfw))
    assert len(again.attachments) == 1 and WITHHELD_ONE not in again.content


async def test_its_owner_still_sees_a_flagged_image_privately(discord: DiscordHarness) -> None:
    """Made in an NSFW channel and asked for elsewhere, /show answers its owner alone (the
    gallery's rule), so the safety mode has nobody to hide it from."""
    await ephemeral_reply(await discord.slash("policy set", user=discord.admin, safety="block"))
    made = await imagine(discord, "a lighthouse", channel=discord.nsfw)
    ix = await discord.slash("show", id=generation_id_of(made))
    private = await ephemeral_reply(ix)
    assert len(private.attachments) == 1 and WITHHELD_ONE not in private.content


def preview_uploads(discord: DiscordHarness) -> list[str]:
    """Every live preview the bot uploaded (progress edits of status messages)."""
    return [
        upload.filename
        for request in discord.requests
        for upload in request.files
        if upload.filename == "preview.png"
    ]


async def test_live_previews_show_only_where_a_flagged_image_would(
    discord: DiscordHarness,
) -> None:
    """A preview is an image no checker has seen: none outside NSFW channels while the
    safety checker acts there; in an NSFW channel they are shown as before."""
    await imagine(discord, "a slow lighthouse", steps=12)
    assert preview_uploads(discord) == []
    await imagine(discord, "a slow lighthouse", steps=12, channel=discord.nsfw)
    assert preview_uploads(discord), "previews still show in an NSFW channel"


async def test_a_published_list_leaves_flagged_thumbnails_out_where_they_would_be_hidden(
    discord: DiscordHarness,
) -> None:
    await imagine(discord, "a lighthouse")
    private = await ephemeral_reply(await discord.slash("history"))
    assert len(private.attachments) == 1, "the owner's own list shows every thumbnail"

    published = await discord.slash("history", publish=True)
    page = await published.wait_for_original(lambda m: "Your history" in m.content)
    assert page.attachments == []
    nsfw = await discord.slash("history", publish=True, channel=discord.nsfw)
    page = await nsfw.wait_for_original(lambda m: "Your history" in m.content)
    assert len(page.attachments) == 1


async def test_a_lora_preview_is_screened_like_a_result(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    await ephemeral_reply(await discord.slash("policy set", user=discord.admin, safety="block"))
    lora = write_tiny_lora(tmp_path / "style.safetensors", "test-subject")
    upload = Upload("style.safetensors", lora.read_bytes())
    await discord.slash("lora add", user=discord.admin, file=upload)
    preview = await discord.wait_for_message(
        discord.general, lambda m: m.content.startswith("Preview of LoRA"), timeout=60
    )
    assert "3 images were withheld by the safety checker" in preview.content
    assert "failed" not in preview.content
    # The grid keeps its three labelled tiles, each one blank.
    assert attachment_names(preview) == ["preview-test-subject.png"]
