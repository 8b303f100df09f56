"""A result over the interaction's upload limit, end to end: sent as JPEG that fits, the PNG
kept in the gallery, and a line naming the CLI command that exports it; /show the same."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.settings import Settings
from pipeline.png import read_png
from tests.bot.cli_helpers import dreamcord
from tests.e2e.conftest import generation_id_of, imagine, is_result
from tests.fakediscord import DiscordHarness, StoredMessage

pytestmark = pytest.mark.e2e

LIMIT = 60_000
"""Under the PNG of a 256x256 picture of the tiny model's noise (about 150 kB), over a 64x64
one's (under 15 kB)."""


def sent_as_jpeg(message: StoredMessage) -> Image.Image:
    data = message.attachment_data(0)
    assert len(data) <= LIMIT, f"{len(data)} bytes over the {LIMIT} limit"
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and message.attachments[0]["filename"].endswith(".jpg")
    return image


async def test_a_result_over_the_upload_limit_comes_as_jpeg_with_the_png_kept(
    discord: DiscordHarness,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    small = await imagine(discord, "a small pond", count=1, steps=1)
    assert small.attachments[0]["filename"].endswith(".png"), "under the limit: PNG as before"

    discord.limit_uploads(LIMIT)
    result = await imagine(discord, "a wide lake", count=1, size="256x256", steps=1)
    assert sent_as_jpeg(result).size == (256, 256), "full size, only the encoding changed"
    generation_id = generation_id_of(result)
    assert "sent as JPEG (quality" in result.content
    assert f"`dreamcord export {generation_id}`" in result.content

    show = await discord.slash("show", id=generation_id)
    shown = await show.wait_for_original(is_result, timeout=30)
    assert sent_as_jpeg(shown).size == (256, 256)
    assert f"`dreamcord export {generation_id}`" in shown.content, "/show meets the same limit"

    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    out = tmp_path / "exported"
    out.mkdir()
    outcome = await asyncio.to_thread(
        dreamcord, capsys, "export", str(generation_id), "--out", str(out)
    )
    assert outcome.code == 0, outcome.err
    exported = out / f"dreamcord-{generation_id}-1.png"
    assert outcome.out.strip() == str(exported)
    assert Image.open(exported).format == "PNG"
    assert exported.stat().st_size > LIMIT, "the PNG itself would not have fitted"
    picture, parameters = read_png(exported)
    assert picture.size == (256, 256)
    assert parameters is not None and "a wide lake" in parameters, "its parameters kept"
