"""/imagine with ControlNet, through the fake Discord server: a tiny ControlNet in the library,
a control image and its model, the stored unit and map, Info, Reroll, U, and the refusals.

The canny reference is OpenCV's `Canny(100, 200)` applied directly (as A1111's annotator does)
to the picture fitted by A1111's "Crop and Resize".
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bot.guild import Actor
from pipeline.control.preprocess import crop_and_resize
from pipeline.request import GenerationRequest
from tests.control_files import tiny_controlnet, write_diffusers_layout, write_original_layout
from tests.depth_files import write_depth_folder
from tests.e2e.conftest import ephemeral_reply, generation_id_of, imagine, is_result
from tests.fakediscord import DiscordHarness, Upload
from tests.pipeline.control.test_depth_maps import reference

pytestmark = pytest.mark.e2e

ADMIN = Actor(guild_id=None, user_id=None)


def photo(size: tuple[int, int] = (120, 80)) -> bytes:
    """Stripes and a disc: a picture whose edges canny draws."""
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    stripes = ((xs // 9) % 2 * 220).astype(np.uint8)
    disc = ((((xs - 60) ** 2 + (ys - 40) ** 2) < 600) * 35).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([stripes, stripes + disc, 255 - stripes], -1), "RGB").save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


async def add_controlnets(discord: DiscordHarness, tmp_path: Path, *names: str) -> None:
    """Tiny ControlNets added as an admin would; the type is guessed from the file name."""
    library = discord.client.app.libraries.controlnets
    for number, name in enumerate(names):
        write = write_original_layout if number % 2 else write_diffusers_layout
        path = write(tmp_path / f"{name}.safetensors", tiny_controlnet(seed=number))
        await library.add_file(path, ADMIN, name=name)


async def request_of(discord: DiscordHarness, message) -> GenerationRequest:
    generation = await discord.client.services.repos.generations.get(generation_id_of(message))
    assert generation is not None
    return generation.request


def pixels_of(path: Path) -> np.ndarray:
    return pixels(path.read_bytes())


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


async def test_a_control_image_and_model_queue_a_unit_whose_map_info_shows_and_reroll_u_keep(
    discord: DiscordHarness, tmp_path: Path, settings
) -> None:
    await add_controlnets(discord, tmp_path, "control_tiny_canny", "control_tiny_depth")
    done = await imagine(
        discord,
        "a house",
        control_image=Upload("house.png", photo()),
        control="control_tiny_canny",
        control_weight=0.8,
        count=1,
    )
    assert "Reroll" in [button.get("label") for button in done.buttons()]
    request = await request_of(discord, done)
    (unit,) = request.controls
    assert (unit.model, unit.weight, unit.start, unit.end, unit.preprocessor) == (
        "control_tiny_canny",
        0.8,
        0.0,
        1.0,
        "canny",
    )
    stored = Path(unit.image)
    assert stored.is_relative_to(settings.data_dir / "uploads")
    fitted = crop_and_resize(Image.open(io.BytesIO(photo())), request.width, request.height)
    expected = cv2.Canny(np.asarray(fitted), 100, 200)
    assert expected.any() and np.array_equal(pixels_of(stored)[..., 0], expected)

    info = await ephemeral_reply(await discord.click(done, "Info"))
    # Markdown escaped: the underscores would start italics.
    line = (
        r"ControlNet 1: control\_tiny\_canny (canny) · weight 0.8 · steps 0-1 · preprocessor canny"
    )
    assert line in info.content
    assert [a["filename"] for a in info.attachments] == ["control-1.png"]
    assert np.array_equal(pixels(info.attachment_data("control-1.png"))[..., 0], expected)

    again = await (await discord.click(done, "Reroll")).wait_for_original(is_result, timeout=60)
    rerolled = await request_of(discord, again)
    assert rerolled.controls == request.controls and rerolled.seed != request.seed

    # The engine resizes the stored map to the upscale's size.
    bigger = await (await discord.click(done, "U")).wait_for_original(is_result, timeout=60)
    upscaled = await request_of(discord, bigger)
    assert upscaled.controls == request.controls
    assert (upscaled.width, upscaled.height) == (2 * request.width, 2 * request.height)


async def test_the_only_enabled_model_is_used_and_its_type_decides_the_preprocessor(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    await add_controlnets(discord, tmp_path, "control_tiny_depth")
    choices = await discord.autocomplete("imagine", "control", "dep")
    assert [(c["name"], c["value"]) for c in choices] == [
        ("control_tiny_depth (depth)", "control_tiny_depth")
    ]
    done = await imagine(discord, "a room", control_image=Upload("depth.png", photo()), count=1)
    (unit,) = (await request_of(discord, done)).controls
    assert (unit.model, unit.preprocessor) == ("control_tiny_depth", "none")


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"control_image": Upload("a.png", photo())}, "a control image needs a ControlNet model"),
        ({"control": "control_tiny_canny"}, "has no control image"),
        (
            {"control_image": Upload("a.png", photo()), "control": "control_tiny_cany"},
            "did you mean 'control_tiny_canny'",
        ),
        (
            {"control_image": Upload("a.png", b"no picture"), "control": "control_tiny_canny"},
            "not a picture Dreamcord can read",
        ),
        (
            {
                "control_image": Upload("a.png", photo()),
                "control": "control_tiny_depth",
                "preprocess": "depth",
            },
            "the depth preprocessor needs a depth model in",
        ),
    ],
)
async def test_bad_control_input_is_answered_privately_and_nothing_is_queued(
    discord: DiscordHarness, tmp_path: Path, settings, options, says: str
) -> None:
    await add_controlnets(discord, tmp_path, "control_tiny_canny", "control_tiny_depth")
    ix = await discord.slash("imagine", prompt="a house", **options)
    reply = await ephemeral_reply(ix)
    assert says in reply.content
    assert await discord.client.services.repos.jobs.list_queued() == []
    assert not list((settings.data_dir / "uploads").rglob("*.png"))


async def test_preprocess_depth_stores_the_depth_map_of_the_annotators_model(
    discord: DiscordHarness, tmp_path: Path, settings
) -> None:
    folder = write_depth_folder(settings.data_dir / "annotators" / "depth")
    await add_controlnets(discord, tmp_path, "control_tiny_depth")
    done = await imagine(
        discord, "a room", control_image=Upload("room.png", photo()), preprocess="depth", count=1
    )
    request = await request_of(discord, done)
    (unit,) = request.controls
    assert unit.preprocessor == "depth"
    expected = reference(folder, Image.open(io.BytesIO(photo())), request.width, request.height)
    assert np.array_equal(pixels_of(Path(unit.image)), expected)
