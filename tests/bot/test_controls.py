"""ControlNet units from what a user asked: the model, the preprocessor, the stored map, the
refusals. The canny reference is OpenCV's `Canny(100, 200)` applied directly, as A1111's
ControlNet annotator does, to the picture fitted by A1111's "Crop and Resize"."""

from __future__ import annotations

import io
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.app import Edit, Operation
from bot.container import Services, open_services
from bot.controls import (
    ControlAsk,
    ControlService,
    choose_model,
    make_map,
    plan_units,
)
from bot.guild import Actor
from bot.jobs import Origin
from bot.settings import load_settings
from bot.uploads import UPLOADS_FOLDER, Uploads
from data.generations import Generation
from data.repositories import Repositories
from pipeline.control.annotators import Annotators
from pipeline.control.model_types import default_preprocessor
from pipeline.control.preprocess import crop_and_resize
from pipeline.errors import UserError
from pipeline.request import ControlUnit, GenerationRequest, Mode
from tests.bot import picture_files
from tests.bot.test_edits import DrawingBackend
from tests.control_files import tiny_controlnet, write_diffusers_layout

REQUEST = GenerationRequest(prompt="a house", width=96, height=64)
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@dataclass(frozen=True)
class Entry:
    """A library entry as `bot.controls.ControlModel` reads it."""

    name: str
    control_type: str
    enabled: bool = True


MODELS = [Entry("canny-v11", "canny"), Entry("depth-v11", "depth"), Entry("old", "canny", False)]
NO_ANNOTATORS = Annotators(Path("no-annotators-here"))
"""An annotators folder with no model in it: the built-in preprocessors need none."""


def photo(size: tuple[int, int] = (200, 100), kind: str = "PNG") -> bytes:
    """A picture with edges: stripes and a disc, so canny finds something to draw."""
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    stripes = ((xs // 13) % 2 * 200).astype(np.uint8)
    disc = (((xs - size[0] / 2) ** 2 + (ys - size[1] / 2) ** 2) < (size[1] / 3) ** 2) * 55
    pixels = np.stack([stripes, stripes + disc.astype(np.uint8), 255 - stripes], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, format=kind)
    return buffer.getvalue()


def canny_reference(data: bytes, width: int, height: int) -> np.ndarray:
    fitted = crop_and_resize(Image.open(io.BytesIO(data)).convert("RGB"), width, height)
    return cv2.Canny(np.asarray(fitted), 100, 200)


# The model and the preprocessor


@pytest.mark.parametrize(
    ("control_type", "preprocessor"),
    [
        ("canny", "canny"),
        ("depth", "none"),
        ("openpose", "none"),
        ("lineart", "none"),
        ("scribble", "none"),
        ("softedge", "none"),
        ("tile", "none"),
        ("normal", "none"),
    ],
)
def test_the_default_preprocessor_follows_the_model_type(control_type, preprocessor) -> None:
    assert default_preprocessor(control_type) == preprocessor
    (plan,) = plan_units(
        REQUEST, [ControlAsk(b"x", "m")], [Entry("m", control_type)], NO_ANNOTATORS
    )
    assert plan.unit.preprocessor == preprocessor


def test_a_named_preprocessor_wins_over_the_default() -> None:
    (plan,) = plan_units(
        REQUEST, [ControlAsk(b"x", "canny-v11", preprocessor="invert")], MODELS, NO_ANNOTATORS
    )
    assert plan.unit.preprocessor == "invert"


def test_a_model_is_found_in_any_letter_case() -> None:
    assert choose_model("CANNY-v11", MODELS).name == "canny-v11"


def test_without_a_model_the_only_enabled_one_is_used() -> None:
    only = [Entry("depth-v11", "depth"), Entry("old", "canny", False)]
    (plan,) = plan_units(REQUEST, [ControlAsk(b"x")], only, NO_ANNOTATORS)
    assert (plan.unit.model, plan.unit.preprocessor, plan.control_type) == (
        "depth-v11",
        "none",
        "depth",
    )


@pytest.mark.parametrize(
    ("name", "models", "says"),
    [
        (None, MODELS, "a control image needs a ControlNet model: name one of canny-v11, depth"),
        (None, [], "no ControlNet model is installed yet"),
        ("canny-v1", MODELS, "did you mean 'canny-v11'?"),
        ("zzz", MODELS, "the installed ones are canny-v11, depth-v11"),
        ("zzz", [], "none is installed yet"),
        ("OLD", MODELS, "'old' is disabled: an admin can enable it"),
    ],
)
def test_a_model_that_cannot_be_chosen_is_refused_with_the_fix(name, models, says) -> None:
    with pytest.raises(UserError, match=says.replace("?", r"\?")):
        choose_model(name, models)


# The checks, before any picture is decoded


@pytest.mark.parametrize(
    ("asks", "says"),
    [
        ([ControlAsk(None, "canny-v11")], "the ControlNet unit has no control image"),
        ([ControlAsk(b"x", "canny-v11")] * 4, "4 ControlNet units asked for: use at most 3"),
        ([ControlAsk(b"x", "canny-v11", weight=2.5)], "weight 2.5 is out of range: use 0 to 2"),
        ([ControlAsk(b"x", "canny-v11", start=0.5, end=0.5)], "the start before the end"),
        ([ControlAsk(b"x", "canny-v11"), ControlAsk(None)], "ControlNet unit 2 has no control"),
    ],
)
def test_bad_units_are_refused_before_any_picture_is_read(asks, says) -> None:
    # b"x" is no picture: refusing by its bytes would say so instead.
    with pytest.raises(UserError, match=says):
        plan_units(REQUEST, asks, MODELS, NO_ANNOTATORS)


finite = st.floats(min_value=-3, max_value=3, allow_nan=False)


@FUZZ
@given(weight=st.floats(allow_nan=True, allow_infinity=True) | finite, start=finite, end=finite)
def test_any_weight_start_and_end_plan_only_within_a1111s_bounds(weight, start, end) -> None:
    ask = ControlAsk(b"x", "canny-v11", weight=weight, start=start, end=end)
    valid = math.isfinite(weight) and 0 <= weight <= 2 and 0 <= start < end <= 1
    try:
        (plan,) = plan_units(REQUEST, [ask], MODELS, NO_ANNOTATORS)
    except UserError as refusal:
        assert not valid, refusal
        assert "ControlNet unit" in str(refusal)
    else:
        assert valid
        assert (plan.unit.weight, plan.unit.start, plan.unit.end) == (weight, start, end)


# The map


def test_the_canny_map_is_opencvs_canny_of_the_picture_at_the_request_size() -> None:
    data = photo((200, 100))
    (plan,) = plan_units(REQUEST, [ControlAsk(data, "canny-v11")], MODELS, NO_ANNOTATORS)
    made = np.asarray(make_map(plan, REQUEST.width, REQUEST.height, NO_ANNOTATORS))
    expected = canny_reference(data, 96, 64)
    assert made.shape == (64, 96, 3)
    assert expected.any() and np.array_equal(made[..., 0], expected)
    assert np.array_equal(made[..., 0], made[..., 2])


def test_a_ready_map_is_taken_as_it_is_and_invert_turns_it_around() -> None:
    data = photo((96, 64))
    source = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    (ready, inverted) = plan_units(
        REQUEST,
        [ControlAsk(data, "depth-v11"), ControlAsk(data, "depth-v11", preprocessor="invert")],
        MODELS,
        NO_ANNOTATORS,
    )
    assert np.array_equal(np.asarray(make_map(ready, 96, 64, NO_ANNOTATORS)), source)
    assert np.array_equal(np.asarray(make_map(inverted, 96, 64, NO_ANNOTATORS)), 255 - source)


def animated_png() -> bytes:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"certainly not a picture", "not a picture Dreamcord can read"),
        (picture_files.png(40_000, 40_000), "more pixels than can be opened safely"),
        (picture_files.gif(64, 64, frames=3), "GIF pictures are not accepted"),
        (animated_png(), "animated pictures are not accepted"),
    ],
)
def test_a_control_image_takes_the_checks_of_an_upload(data: bytes, says: str) -> None:
    (plan,) = plan_units(REQUEST, [ControlAsk(data, "canny-v11")], MODELS, NO_ANNOTATORS)
    with pytest.raises(UserError, match=says):
        make_map(plan, 96, 64, NO_ANNOTATORS)


@FUZZ
@given(data=st.binary(max_size=2048) | st.sampled_from([photo(kind="JPEG")]).map(bytearray))
def test_any_bytes_as_a_control_image_give_a_map_of_the_size_or_a_user_error(data) -> None:
    (plan,) = plan_units(REQUEST, [ControlAsk(bytes(data), "canny-v11")], MODELS, NO_ANNOTATORS)
    try:
        made = make_map(plan, 96, 64, NO_ANNOTATORS)
    except UserError as refusal:
        assert str(refusal)
    else:
        assert made.size == (96, 64) and made.mode == "RGB"


# The service: maps held in the uploads folder for the job that uses them


class Listed:
    """The library's `list`, over fixed entries."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries

    async def list(self, search: str | None = None) -> list[Entry]:
        return self.entries


def stored(path: str) -> np.ndarray | None:
    """The stored map's pixels, None when there is no such file."""
    if not Path(path).is_file():
        return None
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture
def uploads(tmp_path: Path, repos: Repositories) -> Uploads:
    return Uploads(tmp_path / UPLOADS_FOLDER, repos.jobs, 512 * 512)


async def test_a_map_is_stored_at_the_request_size_and_dropped_when_nothing_is_queued(
    uploads: Uploads,
) -> None:
    service = ControlService(Listed(MODELS), uploads, NO_ANNOTATORS)
    data = photo((200, 100))
    async with service.held(REQUEST, [ControlAsk(data, "canny-v11", weight=0.7)]) as request:
        (unit,) = request.controls
        assert Path(unit.image).is_relative_to(uploads.folder)
        kept = stored(unit.image)
        assert kept is not None and np.array_equal(kept[..., 0], canny_reference(data, 96, 64))
        assert (unit.model, unit.weight, unit.preprocessor) == ("canny-v11", 0.7, "canny")
    assert stored(unit.image) is None


async def test_a_queued_job_keeps_its_map(uploads: Uploads, repos: Repositories) -> None:
    service = ControlService(Listed(MODELS), uploads, NO_ANNOTATORS)
    async with service.held(REQUEST, [ControlAsk(photo(), "canny-v11")]) as request:
        await repos.jobs.create(request, user_id=1)
    assert stored(request.controls[0].image) is not None


async def test_a_refused_unit_stores_nothing(uploads: Uploads) -> None:
    service = ControlService(Listed(MODELS), uploads, NO_ANNOTATORS)
    asks = [ControlAsk(photo(), "canny-v11"), ControlAsk(b"not a picture", "depth-v11")]
    with pytest.raises(UserError, match="not a picture"):
        async with service.held(REQUEST, asks):
            pytest.fail("the block must not run")
    assert not list(uploads.folder.rglob("*.png"))


async def test_without_asks_the_request_is_left_as_it_is(uploads: Uploads) -> None:
    async with ControlService(Listed(MODELS), uploads, NO_ANNOTATORS).held(REQUEST, []) as request:
        assert request is REQUEST


async def test_info_shows_each_unit_with_its_type_and_its_kept_map(
    uploads: Uploads, repos: Repositories, tmp_path: Path
) -> None:
    service = ControlService(Listed(MODELS), uploads, NO_ANNOTATORS)
    async with service.held(REQUEST, [ControlAsk(photo(), "canny-v11")]) as request:
        await repos.jobs.create(request, user_id=1)
    elsewhere = tmp_path / "elsewhere.png"  # a CLI run's map, or a path no longer Dreamcord's
    Image.new("RGB", (96, 64)).save(elsewhere)
    unit = request.controls[0]
    gone = ControlUnit("removed-model", str(elsewhere))
    shown = await service.shown(_generation(request, (unit, gone)))
    assert [(s.number, s.control_type, s.map_path) for s in shown] == [
        (1, "canny", Path(unit.image)),
        (2, None, None),
    ]


def _generation(request: GenerationRequest, controls: tuple[ControlUnit, ...]) -> Generation:
    return Generation(
        id=1,
        job_id="job",
        user_id=1,
        guild_id=None,
        channel_id=None,
        message_id=None,
        operation=Mode.TXT2IMG,
        parent_image_id=None,
        request=replace(request, controls=controls),
        created_at="",
        deleted_at=None,
        images=(),
    )


# What grows out of a result: Reroll, V and U keep the units, Remix too; an image edit drops them

ALICE = Origin(user_id=1, guild_id=5, channel_id=10)


class _Silent:
    def progress(self, job, step, total, preview) -> None:
        pass

    async def deliver(self, job, generation) -> None:
        pass

    async def report_failure(self, job, message: str) -> None:
        pass


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    settings = load_settings(None, model="tiny", data_dir=tmp_path / "data")
    started = await open_services(
        settings, _Silent(), backend=DrawingBackend()
    )  # pictures an edit can grow
    path = write_diffusers_layout(tmp_path / "tiny_canny.safetensors", tiny_controlnet())
    await started.app.libraries.controlnets.add_file(path, Actor(None, None), name="tiny-canny")
    yield started
    await started.close()


async def test_reroll_variations_upscale_and_remix_keep_the_units_an_image_edit_drops_them(
    services: Services,
) -> None:
    app = services.app
    base = GenerationRequest("a house", width=64, height=64, steps=2, seed=7)
    async with app.controls.held(base, [ControlAsk(photo(), weight=0.5)]) as request:
        ticket = await app.jobs.submit(request, ALICE)
    await app.jobs.wait(ticket.job_id)
    generation = await services.repos.generations.for_job(ticket.job_id)
    assert generation is not None
    (unit,) = generation.request.controls
    assert (unit.model, unit.weight, unit.preprocessor) == ("tiny-canny", 0.5, "canny")
    upscale = app.requests.upscale(generation, 0)
    assert (upscale.width, upscale.controls) == (128, (unit,))  # the engine resizes the map
    assert app.requests.vary(generation, 0).controls == (unit,)
    assert app.requests.reroll(generation).controls == (unit,)
    remix = await app.requests.compose("a barn", {}, 1, 5, base=generation.request)
    assert remix.controls == (unit,)
    async with app.edits.of_result(generation, 0, Edit(Operation.ZOOM_OUT), 1, 5) as edit:
        assert edit.request.mode is Mode.OUTPAINT and edit.request.controls == ()


def test_a_depth_unit_without_its_model_is_refused_before_the_picture_is_read() -> None:
    """b"x" is no picture: the missing model is what the user hears, and nothing is held."""
    with pytest.raises(UserError, match=r"the depth preprocessor needs a depth model in"):
        plan_units(
            REQUEST, [ControlAsk(b"x", "depth-v11", preprocessor="depth")], MODELS, NO_ANNOTATORS
        )
