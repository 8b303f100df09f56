"""The edit buttons and /edit end to end: Zoom Out, Vary (Region), Pan, Make Square, masks."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops

from bot.settings import Settings
from tests.e2e.conftest import (
    ephemeral_reply,
    generation_id_of,
    imagine,
    is_result,
    labels,
    make_bot,
)
from tests.fakediscord import DiscordHarness, InteractionRecord, StoredMessage, Upload

pytestmark = pytest.mark.e2e

EDIT_LABELS = ["Vary (Region)", "Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom"]


def size_of(message: StoredMessage) -> tuple[int, int]:
    return Image.open(io.BytesIO(message.attachment_data(0))).size


def custom_id(message: StoredMessage, prefix: str) -> str:
    for component in message.walk_components():
        if str(component.get("custom_id", "")).startswith(prefix):
            return str(component["custom_id"])
    raise LookupError(f"message {message.id} has no component {prefix}…")


def inputs_of(ix: InteractionRecord) -> dict[str, str | None]:
    """The modal's text inputs by custom_id, with their pre-filled values."""
    assert ix.modal is not None, "the bot answered with a modal"
    found: dict[str, str | None] = {}
    for row in ix.modal["components"]:
        for component in row.get("components", [row.get("component", {})]):
            found[component["custom_id"]] = component.get("value")
    return found


async def upscaled(discord: DiscordHarness, prompt: str = "a harbour at dawn") -> StoredMessage:
    grid = await imagine(discord, prompt, count=2)
    return await (await discord.click(grid, "U1")).wait_for_original(is_result, timeout=60)


async def test_upscale_then_zoom_out_2x_posts_a_new_result_with_its_own_edit_buttons(
    discord: DiscordHarness,
) -> None:
    big = await upscaled(discord)
    assert size_of(big) == (128, 128)
    shown = labels(big)
    start = shown.index(EDIT_LABELS[0])
    assert shown[start : start + 4] == EDIT_LABELS, "the edit buttons come together"
    assert start > shown.index("Upscale 4x"), "they follow U, V, the upscales and the tools"
    assert "Make Square" not in labels(big), "a square picture has nothing to square"
    zoomed = await (await discord.click(big, "Zoom Out 2x")).wait_for_original(is_result, 90)
    assert "(zoom-out 2)" in zoomed.content
    # The 256x256 canvas (2x 128) is drawn at the picture's own pixel count.
    assert size_of(zoomed) == (128, 128)
    before = Image.open(io.BytesIO(big.attachment_data(0))).convert("RGB")
    after = Image.open(io.BytesIO(zoomed.attachment_data(0))).convert("RGB")
    shrunk = before.resize((64, 64), Image.Resampling.LANCZOS)
    # The kept middle, 16 pixels in (past the reach of the mask's blur of 4), is the input
    # shrunk by half, exactly.
    kept = ImageChops.difference(after.crop((48, 48, 80, 80)), shrunk.crop((16, 16, 48, 48)))
    assert kept.getbbox() is None
    repos = discord.client.services.repos.generations
    edited = await repos.get(generation_id_of(zoomed))
    parent = await repos.get(generation_id_of(big))
    assert edited.operation == "outpaint"
    assert edited.parent_image_id == parent.images[0].id
    assert labels(zoomed)[7:11] == EDIT_LABELS, "an edit can be edited again"


async def test_vary_region_repaints_two_chosen_cells_with_a_new_prompt(
    discord: DiscordHarness,
) -> None:
    single = await imagine(discord, "a red barn", count=1, size="96x96")
    click = await discord.click(single, "Vary (Region)")
    picker = await ephemeral_reply(click)
    picked = await discord.select(picker, custom_id(picker, "dc:xr:"), ["top-left", "bottom-right"])
    await picked.wait_for_response()
    assert inputs_of(picked) == {"prompt": "a red barn"}, "the modal offers the old prompt"
    submitted = await discord.submit_modal(picked, {"prompt": "a blue barn"})
    done = await submitted.wait_for_original(is_result, timeout=90)
    assert "a blue barn" in done.content and "vary-region top-left,bottom-right" in done.content
    generation = await discord.client.services.repos.generations.get(generation_id_of(done))
    request = generation.request
    assert (request.mode, request.prompt) == ("inpaint", "a blue barn")
    mask = Image.open(request.mask_image).convert("L")
    assert mask.getpixel((16, 16)) == 255 and mask.getpixel((80, 80)) == 255, "the two corners"
    assert mask.getpixel((48, 48)) == 0 and mask.getpixel((80, 16)) == 0, "nothing else"
    before = Image.open(io.BytesIO(single.attachment_data(0))).convert("RGB")
    after = Image.open(io.BytesIO(done.attachment_data(0))).convert("RGB")
    far = (72, 0, 96, 24)  # the top-right cell, out of the blur's reach of both corners
    assert ImageChops.difference(after.crop(far), before.crop(far)).getbbox() is None
    assert ImageChops.difference(after.crop((0, 0, 24, 24)), before.crop((0, 0, 24, 24))).getbbox()


async def test_custom_zoom_takes_a_factor_and_refuses_one_out_of_range(
    discord: DiscordHarness,
) -> None:
    single = await imagine(discord, "a kite", count=1)
    opened = await discord.click(single, "Custom Zoom")
    await opened.wait_for_response()
    assert inputs_of(opened) == {"prompt": "a kite", "factor": "1.5"}
    refused = await discord.submit_modal(opened, {"factor": "3"})
    reply = await ephemeral_reply(refused)
    assert "zoom factor 3 is out of range" in reply.content

    again = await discord.click(single, "Custom Zoom")
    await again.wait_for_response()
    done = await (await discord.submit_modal(again, {"factor": "1.25"})).wait_for_original(
        is_result, timeout=90
    )
    assert "(zoom-out 1.25)" in done.content


async def test_make_square_is_offered_for_a_wide_picture_and_squares_it(
    discord: DiscordHarness,
) -> None:
    wide = await imagine(discord, "a long train", count=1, size="128x64")
    assert "Make Square" in labels(wide)
    squared = await (await discord.click(wide, "Make Square")).wait_for_original(is_result, 90)
    assert size_of(squared) == (128, 128)


async def test_edit_buttons_of_an_old_message_work_after_a_restart(
    discord: DiscordHarness, settings: Settings
) -> None:
    single = await imagine(discord, "a lighthouse", count=1)
    async with discord.restart(make_bot(settings)):
        left = custom_id(single, "dc:x:left:")
        panned = await (await discord.click(single, left)).wait_for_original(is_result, 90)
        assert size_of(panned) == (96, 64), "half of 64 added on the left"
        picker = await ephemeral_reply(await discord.click(single, "Vary (Region)"))
        picked = await discord.select(picker, custom_id(picker, "dc:xr:"), ["centre"])
        await picked.wait_for_response()
        assert picked.modal is not None, "the picker of a restarted bot opens the modal"


async def test_edit_buttons_follow_the_privacy_rule_of_the_other_buttons(
    discord: DiscordHarness,
) -> None:
    made = await imagine(discord, "a moonlit pool", channel=discord.nsfw, count=1)
    shown = await discord.slash("show", id=generation_id_of(made), user=discord.alice)
    private = await shown.wait_for_followup(is_result, timeout=10)
    for label in ("Zoom Out 2x", "Vary (Region)"):
        click = await discord.click(private, label, user=discord.alice)
        assert "made in an NSFW channel" in (await ephemeral_reply(click)).content
    assert not [
        message
        for message in discord.messages(discord.general)
        if is_result(message) and not message.ephemeral
    ], "nothing was posted in the SFW channel"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def left_half(size: tuple[int, int]) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    return png(mask)


PHOTO = Upload("photo.png", png(Image.new("RGB", (128, 96), "orange")), "image/png")


async def test_edit_with_a_mask_attachment_repaints_its_white_part(
    discord: DiscordHarness,
) -> None:
    mask = Upload("mask.png", left_half((128, 96)), "image/png")
    ix = await discord.slash("edit", image=PHOTO, mask=mask, prompt="a purple cat", strength=0.8)
    done = await ix.wait_for_original(is_result, timeout=90)
    assert size_of(done) == (128, 96)
    generation = await discord.client.services.repos.generations.get(generation_id_of(done))
    assert generation.request.mode == "inpaint" and generation.request.strength == 0.8


async def test_a_mask_of_another_size_is_stretched_and_the_user_is_told(
    discord: DiscordHarness,
) -> None:
    mask = Upload("mask.png", left_half((64, 64)), "image/png")
    ix = await discord.slash("edit", image=PHOTO, mask=mask, prompt="a cat")
    await ix.wait_for_original(is_result, timeout=90)
    note = await ix.wait_for_followup(lambda m: "stretched" in m.content)
    assert note.ephemeral and "64x64" in note.content


@pytest.mark.parametrize(
    ("mask", "says"),
    [
        (png(Image.new("L", (128, 96), 0)), "the mask is empty"),
        (b"no picture here", "not a picture Dreamcord can read"),
    ],
)
async def test_a_bad_mask_is_refused_privately_and_nothing_is_kept(
    discord: DiscordHarness, settings: Settings, mask: bytes, says: str
) -> None:
    ix = await discord.slash(
        "edit", image=PHOTO, mask=Upload("mask.png", mask, "image/png"), prompt="a cat"
    )
    assert says in (await ephemeral_reply(ix)).content
    assert not list((settings.data_dir / "uploads").rglob("*.png"))
