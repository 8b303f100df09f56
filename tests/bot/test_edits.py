"""The edit service on a real database: canvases, masks, requests, and what stays on disk.

Expected pictures come from Pillow itself (a resize, a crop) and from the geometry the issue
states (thirds of each side, half the picture for a pan), not from `pipeline.canvas`.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as settings_for_fuzz
from hypothesis import strategies as st
from PIL import Image, ImageChops

from bot.app import Edit, Generation, Operation, parse_factor
from bot.container import Services, open_services
from bot.jobs import Origin
from bot.settings import Settings, load_settings
from bot.uploads import sweep_uploads
from pipeline.backend import ImageResult, ImageTask, StepCallback
from pipeline.errors import UserError
from pipeline.request import GenerationRequest, Mode
from tests.pipeline.fakes import FakeBackend

ALICE = Origin(user_id=1, guild_id=5, channel_id=10)


class DrawingBackend(FakeBackend):
    """The fake backend, but its images are a gradient at the request's size, so an edit has
    a picture worth checking."""

    def run(self, tasks: Sequence[ImageTask], on_step: StepCallback, should_stop) -> list:
        results: list[ImageResult] = super().run(tasks, on_step, should_stop)
        return [replace(result, image=gradient(result.task.request)) for result in results]


def gradient(request: GenerationRequest) -> Image.Image:
    horizontal = Image.linear_gradient("L").rotate(90).resize((request.width, request.height))
    vertical = Image.linear_gradient("L").resize((request.width, request.height))
    return Image.merge("RGB", (horizontal, vertical, ImageChops.invert(horizontal)))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=tmp_path / "data", max_queued_per_user=3)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    started = await open_services(settings, _Silent(), backend=DrawingBackend())
    yield started
    await started.close()


class _Silent:
    def progress(self, job, step, total, preview) -> None:
        pass

    async def deliver(self, job, generation) -> None:
        pass

    async def report_failure(self, job, message: str) -> None:
        pass


async def made(services: Services, width: int = 96, height: int = 96) -> Generation:
    """A finished one-image result of `width` x `height`."""
    request = GenerationRequest("a red fox", width=width, height=height, steps=2, seed=7)
    ticket = await services.app.jobs.submit(request, ALICE)
    await services.app.jobs.wait(ticket.job_id)
    generation = await services.repos.generations.for_job(ticket.job_id)
    assert generation is not None
    return generation


def uploads(settings: Settings) -> list[Path]:
    return sorted((settings.data_dir / "uploads").rglob("*.png"))


def source_of(services: Services, generation: Generation) -> Image.Image:
    return Image.open(services.app.gallery.image_path(generation.images[0])).convert("RGB")


def white(mask: Image.Image) -> set[tuple[int, int]]:
    width = mask.width
    return {(i % width, i // width) for i, value in enumerate(mask.tobytes()) if value >= 128}


def box(left: int, top: int, right: int, bottom: int) -> set[tuple[int, int]]:
    return {(x, y) for x in range(left, right) for y in range(top, bottom)}


async def test_vary_region_repaints_exactly_the_chosen_cells_with_the_new_prompt(
    services: Services,
) -> None:
    generation = await made(services)
    edit = Edit(Operation.VARY_REGION, prompt="a blue fox", regions=("top-left", "bottom-right"))
    async with services.app.edits.of_result(generation, 0, edit, 1, 5) as prepared:
        request = prepared.request
        mask = Image.open(request.mask_image).convert("L")
        picture = Image.open(request.init_image).convert("RGB")
    assert request.mode is Mode.INPAINT and request.prompt == "a blue fox"
    assert (request.width, request.height) == (96, 96) and request.count == 1
    assert request.strength == 0.75 and request.inpaint is not None
    assert request.inpaint.fill == "original"
    assert request.parent_image_id == generation.images[0].id
    assert ("Edit", "vary-region top-left,bottom-right") in request.extras
    assert white(mask) == box(0, 0, 32, 32) | box(64, 64, 96, 96), "thirds of a 96 side are 32"
    assert ImageChops.difference(picture, source_of(services, generation)).getbbox() is None


async def test_zoom_out_2_shrinks_the_picture_into_the_middle_and_masks_the_new_border(
    services: Services,
) -> None:
    generation = await made(services, 128, 128)
    edit = Edit(Operation.ZOOM_OUT, factor=2.0)
    async with services.app.edits.of_result(generation, 0, edit, 1, 5) as prepared:
        request = prepared.request
        canvas = Image.open(request.init_image).convert("RGB")
        mask = Image.open(request.mask_image).convert("L")
    assert request.mode is Mode.OUTPAINT and request.prompt == "a red fox"
    assert (request.width, request.height) == (128, 128), "the canvas is scaled back"
    assert request.strength == 1.0 and request.inpaint is not None
    assert request.inpaint.fill == "latent noise", "new canvas is drawn from noise"
    assert white(mask) == box(0, 0, 128, 128) - box(32, 32, 96, 96)
    shrunk = source_of(services, generation).resize((64, 64), Image.Resampling.LANCZOS)
    centre = canvas.crop((32, 32, 96, 96))
    assert ImageChops.difference(centre, shrunk).getbbox() is None


async def test_pan_left_adds_half_the_width_on_the_left(services: Services) -> None:
    generation = await made(services, 128, 64)
    edit = Edit(Operation.PAN, direction="left")
    async with services.app.edits.of_result(generation, 0, edit, 1, 5) as prepared:
        request = prepared.request
        canvas = Image.open(request.init_image).convert("RGB")
        mask = Image.open(request.mask_image).convert("L")
    assert (request.width, request.height) == (192, 64)
    assert white(mask) == box(0, 0, 64, 64)
    kept = canvas.crop((64, 0, 192, 64))
    assert ImageChops.difference(kept, source_of(services, generation)).getbbox() is None


async def test_a_canvas_over_the_pixel_limit_is_drawn_at_the_largest_size_within_it(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        None, data_dir=tmp_path / "data", max_pixels=128 * 128, default_size="64x64"
    )
    started = await open_services(settings, _Silent(), backend=DrawingBackend())
    try:
        generation = await made(started, 128, 128)
        edit = Edit(Operation.PAN, direction="right")
        async with started.app.edits.of_result(generation, 0, edit, 1, 5) as prepared:
            request = prepared.request
            assert Image.open(request.init_image).size == (request.width, request.height)
            assert Image.open(request.mask_image).size == (request.width, request.height)
        assert request.width * request.height <= 128 * 128
        assert abs(request.width / request.height - 1.5) < 0.1, "the canvas keeps its aspect"
    finally:
        await started.close()


async def test_make_square_grows_the_short_side_and_refuses_a_square_picture(
    services: Services,
) -> None:
    wide = await made(services, 128, 64)
    async with services.app.edits.of_result(wide, 0, Edit(Operation.SQUARE), 1, 5) as prepared:
        assert (prepared.request.width, prepared.request.height) == (128, 128)
    square = await made(services, 64, 64)
    with pytest.raises(UserError, match="already square"):
        async with services.app.edits.of_result(square, 0, Edit(Operation.SQUARE), 1, 5):
            pass


async def test_a_queued_edit_keeps_its_canvas_and_mask_through_the_sweep(
    services: Services, settings: Settings
) -> None:
    generation = await made(services, 128, 128)
    async with services.app.edits.of_result(
        generation, 0, Edit(Operation.ZOOM_OUT, factor=1.5), 1, 5
    ) as prepared:
        await services.app.jobs.submit(prepared.request, ALICE)
    request = prepared.request
    assert {Path(request.init_image or ""), Path(request.mask_image or "")} <= set(
        uploads(settings)
    ), "the mask is kept for its job too"
    await sweep_uploads(settings.data_dir / "uploads", services.repos.jobs)
    assert len(uploads(settings)) == 2


async def test_a_refused_edit_keeps_nothing(services: Services, settings: Settings) -> None:
    generation = await made(services)
    edit = Edit(Operation.VARY_REGION, prompt="a fox <lora:nowhere:1>", regions=("top",))
    with pytest.raises(UserError, match="nowhere"):
        async with services.app.edits.of_result(generation, 0, edit, 1, 5):
            pass
    assert uploads(settings) == []


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


PICTURE = png(Image.new("RGB", (128, 96), "orange"))


def half_mask(size: tuple[int, int]) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    return png(mask)


async def test_a_painted_mask_repaints_its_white_part_with_the_chosen_options(
    services: Services,
) -> None:
    options = {"strength": 0.5, "mask_blur": 0, "inpaint_area": "masked"}
    async with services.app.edits.of_upload(
        PICTURE, half_mask((128, 96)), "a cat", options, 1, 5
    ) as prepared:
        request = prepared.request
        mask = Image.open(request.mask_image).convert("L")
    assert request.mode is Mode.INPAINT and prepared.notes == ()
    assert (request.width, request.height) == (128, 96) and request.strength == 0.5
    assert request.inpaint is not None
    assert (request.inpaint.mask_blur, request.inpaint.area) == (0, "masked")
    assert white(mask) == box(0, 0, 64, 96)


async def test_a_mask_of_another_size_is_stretched_with_a_note(services: Services) -> None:
    async with services.app.edits.of_upload(
        PICTURE, half_mask((64, 64)), "a cat", {}, 1, 5
    ) as prepared:
        mask = Image.open(prepared.request.mask_image or "")
        assert mask.size == (128, 96)
    assert any("64x64" in note and "stretched" in note for note in prepared.notes)


async def test_a_mask_that_covers_everything_is_a_new_picture_at_that_size(
    services: Services, settings: Settings
) -> None:
    full = png(Image.new("L", (128, 96), 255))
    async with services.app.edits.of_upload(PICTURE, full, "a cat", {}, 1, 5) as prepared:
        await services.app.jobs.submit(prepared.request, ALICE)
    assert prepared.request.mode is Mode.TXT2IMG and prepared.request.init_image is None
    assert (prepared.request.width, prepared.request.height) == (128, 96)
    assert len(prepared.notes) == 1 and "whole picture" in prepared.notes[0]
    assert uploads(settings) == [], "a new picture keeps neither the upload nor the mask"


@pytest.mark.parametrize(
    ("mask", "says"),
    [
        (png(Image.new("L", (128, 96), 0)), "the mask is empty"),
        (b"not a picture at all", "not a picture Dreamcord can read"),
        (png(Image.new("L", (32, 32), 255)), "sides must be 64 to 4096"),
    ],
)
async def test_bad_masks_are_refused_with_the_reason_and_nothing_kept(
    services: Services, settings: Settings, mask: bytes, says: str
) -> None:
    with pytest.raises(UserError, match=says):
        async with services.app.edits.of_upload(PICTURE, mask, "a cat", {}, 1, 5):
            pass
    assert uploads(settings) == []


@pytest.mark.parametrize(
    ("text", "factor"), [("1.5", 1.5), (" 2x ", 2.0), ("1,25", 1.25), ("1.01X", 1.01)]
)
def test_a_typed_zoom_factor_is_read_as_people_write_it(text: str, factor: float) -> None:
    assert parse_factor(text) == factor


@pytest.mark.parametrize("text", ["1", "2.5", "0", "-1.5", "nan", "inf", "", "two"])
def test_a_zoom_factor_out_of_range_or_not_a_number_is_refused(text: str) -> None:
    with pytest.raises(UserError, match="zoom factor"):
        parse_factor(text)


@settings_for_fuzz(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_any_typed_zoom_factor_is_one_in_range_or_a_user_error(text: str) -> None:
    try:
        factor = parse_factor(text)
    except UserError:
        return
    assert 1.0 < factor <= 2.0


async def test_a_finished_edit_keeps_its_operation_and_lineage(services: Services) -> None:
    generation = await made(services, 64, 128)
    async with services.app.edits.of_result(generation, 0, Edit(Operation.SQUARE), 1, 5) as p:
        ticket = await services.app.jobs.submit(p.request, ALICE)
    await services.app.jobs.wait(ticket.job_id)
    edited = await services.repos.generations.for_job(ticket.job_id)
    assert edited is not None, "an outpaint generation is stored"
    assert edited.operation is Mode.OUTPAINT
    assert edited.parent_image_id == generation.images[0].id
    assert ("Edit", "square") in edited.request.extras
    lineage = await services.app.gallery.lineage(edited.images[0])
    assert [image.id for image in lineage] == [edited.images[0].id, generation.images[0].id]


async def test_upscale_and_variations_of_an_edit_start_from_its_result_not_its_mask(
    services: Services,
) -> None:
    generation = await made(services, 128, 128)
    zoom = Edit(Operation.ZOOM_OUT, factor=2.0)
    async with services.app.edits.of_result(generation, 0, zoom, 1, 5) as prepared:
        ticket = await services.app.jobs.submit(prepared.request, ALICE)
    await services.app.jobs.wait(ticket.job_id)
    edited = await services.repos.generations.for_job(ticket.job_id)
    assert edited is not None
    builder = services.app.requests
    for followup in (builder.upscale(edited, 0), builder.vary(edited, 0)):
        assert followup.mask_image is None and followup.inpaint is None
        assert "Edit" not in dict(followup.extras), "an upscale is not a zoom-out"
    again = builder.reroll(edited)
    assert again.mask_image == prepared.request.mask_image, "Reroll redoes the edit"
    assert dict(again.extras)["Edit"] == "zoom-out 2"


CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
"""An SD1.5 LDM checkpoint's first UNet convolution: 9 input channels mark an inpainting one."""


def checkpoint(path: Path, in_channels: int) -> None:
    """A checkpoint file whose header is all the catalog reads (never loaded here)."""
    import torch
    from safetensors.torch import save_file

    save_file({CONV_IN: torch.zeros((320, in_channels, 3, 3))}, str(path))


async def test_edits_run_on_the_models_inpainting_companion_and_results_continue_on_the_model(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    checkpoint(models / "dreamshaper.safetensors", 4)
    checkpoint(models / "dreamshaper-inpainting.safetensors", 9)
    settings = load_settings(None, data_dir=tmp_path / "data", models_dir=models)
    started = await open_services(settings, _Silent(), backend=DrawingBackend())
    try:
        request = GenerationRequest("a fox", width=96, height=96, steps=2, model="dreamshaper")
        ticket = await started.app.jobs.submit(request, ALICE)
        await started.app.jobs.wait(ticket.job_id)
        generation = await started.repos.generations.for_job(ticket.job_id)
        assert generation is not None
        region = Edit(Operation.VARY_REGION, prompt="a cat", regions=("centre",))
        async with started.app.edits.of_result(generation, 0, region, 1, 5) as prepared:
            assert prepared.request.model == "dreamshaper-inpainting"
            ticket = await started.app.jobs.submit(prepared.request, ALICE)
        await started.app.jobs.wait(ticket.job_id)
        edited = await started.repos.generations.for_job(ticket.job_id)
        assert edited is not None
        builder = started.app.requests
        assert builder.upscale(edited, 0).model == "dreamshaper", "U draws on the user's model"
        assert builder.vary(edited, 0).model == "dreamshaper"
        remix = await builder.compose("a dog", {}, 1, 5, base=edited.request)
        assert remix.model == "dreamshaper" and remix.mode is Mode.TXT2IMG
        async with started.app.edits.of_result(edited, 0, region, 1, 5) as again:
            assert again.request.model == "dreamshaper-inpainting", "an edit of an edit too"
    finally:
        await started.close()
