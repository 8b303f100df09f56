"""/imagine with a picture: image to image from an attachment."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.infotext import parse_parameters
from tests.e2e.conftest import ephemeral_reply, generation_id_of, imagine
from tests.fakediscord import DiscordHarness, Upload

pytestmark = pytest.mark.e2e


def picture(size: tuple[int, int], kind: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "orange").save(buffer, format=kind)
    return buffer.getvalue()


async def test_a_picture_starts_the_job_at_its_own_aspect(discord: DiscordHarness) -> None:
    upload = Upload("photo.jpg", picture((160, 96)), "image/jpeg")
    done = await imagine(discord, "a fox", image=upload, strength=0.5, count=1)
    generation = await discord.client.services.repos.generations.get(generation_id_of(done))
    assert generation is not None
    image = generation.images[0]
    assert (image.width, image.height) == (160, 96)
    assert generation.request.mode == "img2img"
    _, _, fields = parse_parameters(image.parameters)
    assert fields["Denoising strength"] == "0.5"


async def test_a_file_that_is_not_a_picture_is_refused_privately(discord: DiscordHarness) -> None:
    upload = Upload("notes.png", b"certainly not a png", "image/png")
    ix = await discord.slash("imagine", prompt="a fox", image=upload)
    reply = await ephemeral_reply(ix)
    assert "not a picture Dreamcord can read" in reply.content


async def test_a_refused_request_keeps_no_picture(discord: DiscordHarness, settings) -> None:
    upload = Upload("photo.jpg", picture((160, 96)), "image/jpeg")
    ix = await discord.slash("imagine", prompt="a fox", image=upload, lora="no-such-lora")
    reply = await ephemeral_reply(ix)
    assert "no-such-lora" in reply.content
    assert not list((settings.data_dir / "uploads").rglob("*.png"))


async def test_a_queued_request_keeps_its_picture(discord: DiscordHarness, settings) -> None:
    upload = Upload("photo.jpg", picture((160, 96)), "image/jpeg")
    await imagine(discord, "a fox", image=upload, strength=0.5, count=1)
    assert len(list((settings.data_dir / "uploads").rglob("*.png"))) == 1
