"""Request limits: the RNG source and ENSD as A1111 names them, ControlNet units and image
prompts within A1111's bounds."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import UserError
from pipeline.limits import MAX_ENSD, Limits, check_request
from pipeline.request import (
    ControlUnit,
    GenerationRequest,
    HiresSpec,
    ImagePrompt,
    InpaintSpec,
    Mode,
)


@pytest.mark.parametrize(("rng", "normalised"), [("cpu", "CPU"), (" Gpu ", "GPU"), ("nv", "NV")])
def test_rng_names_are_read_in_any_case(rng: str, normalised: str) -> None:
    assert check_request(GenerationRequest("a fox", rng=rng), Limits()).rng == normalised


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"rng": "cuda"}, "unknown RNG 'cuda': use CPU"),
        ({"ensd": -1}, "ENSD -1 is out of range: use 0 to"),
        ({"ensd": MAX_ENSD + 1}, f"ENSD {MAX_ENSD + 1} is out of range"),
        ({"ensd": 2.5}, "ENSD '2.5' is not a whole number"),
        ({"ensd": True}, "ENSD 'True' is not a whole number"),
    ],
)
def test_a_bad_rng_or_ensd_says_what_to_use(changes: dict, says: str) -> None:
    with pytest.raises(UserError, match=says):
        check_request(GenerationRequest("a fox", **changes), Limits())


EDIT = GenerationRequest(
    "a fox", mode=Mode.INPAINT, strength=0.75, init_image="a.png", mask_image="a-mask.png"
)


def test_an_edit_gets_the_default_mask_treatment_and_its_names_normalised() -> None:
    assert check_request(EDIT, Limits()).inpaint == InpaintSpec()
    spec = InpaintSpec(area=" Masked", fill="Latent Noise")
    checked = check_request(replace(EDIT, inpaint=spec), Limits()).inpaint
    assert checked == InpaintSpec(area="masked", fill="latent noise")


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"mask_image": None}, "an inpaint edit needs a picture and a mask: give both"),
        ({"mode": Mode.OUTPAINT, "init_image": None}, "an outpaint edit needs a picture"),
        ({"hires": HiresSpec()}, "highres fix does not apply to edits"),
        ({"inpaint": InpaintSpec(mask_blur=65)}, "mask blur 65 is out of range: use 0 to 64"),
        ({"inpaint": InpaintSpec(padding=-1)}, "padding -1 is out of range: use 0 to 256"),
        ({"inpaint": InpaintSpec(area="region")}, "unknown inpaint area 'region': use whole or"),
        ({"inpaint": InpaintSpec(fill="blur")}, "unknown fill 'blur': use original or latent"),
    ],
)
def test_a_bad_edit_says_what_to_fix(changes: dict, says: str) -> None:
    with pytest.raises(UserError, match=says):
        check_request(replace(EDIT, **changes), Limits())


def test_an_outpaint_is_not_blurred_so_its_picture_stays_exact() -> None:
    outpaint = replace(EDIT, mode=Mode.OUTPAINT, inpaint=InpaintSpec(mask_blur=8))
    assert check_request(outpaint, Limits()).inpaint == InpaintSpec(mask_blur=0)
    assert check_request(replace(outpaint, mode=Mode.INPAINT), Limits()).inpaint_spec.mask_blur == 8


# --- ControlNet units and image prompts: A1111's bounds (weight 0-2, start before end) ---


def _unit(**changes: object) -> ControlUnit:
    return replace(ControlUnit("control_v11p_sd15_canny", "/uploads/map.png"), **changes)


@pytest.mark.parametrize(
    ("units", "says"),
    [
        ((_unit(weight=2.5),), r"ControlNet unit 1 \(control_v11p_sd15_canny\): weight 2.5"),
        ((_unit(weight=float("nan")),), "weight nan is out of range: use 0 to 2"),
        ((_unit(start=0.6, end=0.4),), "start 0.6 and end 0.4 must be fractions"),
        ((_unit(start=0.5, end=0.5),), "the start before the end"),
        ((_unit(end=1.5),), "start 0 and end 1.5"),
        ((_unit(), _unit(preprocessor="depth_midas")), "unit 2 .*unknown preprocessor"),
        ((_unit(),) * 4, "4 ControlNet units asked for: use at most 3"),
    ],
)
def test_a_bad_control_unit_says_which_and_what_to_use(units: tuple, says: str) -> None:
    with pytest.raises(UserError, match=says):
        check_request(GenerationRequest("a fox", controls=units), Limits())


def test_three_units_within_bounds_pass_unchanged() -> None:
    units = (_unit(), _unit(weight=0, start=0.2, end=0.8), _unit(weight=2, preprocessor="canny"))
    assert check_request(GenerationRequest("a fox", controls=units), Limits()).controls == units


def test_image_prompts_are_bounded_in_count_and_weight() -> None:
    six = (ImagePrompt("/uploads/a.png"),) * 6
    with pytest.raises(UserError, match="6 image prompts given: use at most 5"):
        check_request(GenerationRequest("a fox", image_prompts=six), Limits())
    with pytest.raises(UserError, match=r"image prompt 2: weight -0\.5 is out of range"):
        prompts = (ImagePrompt("/a.png"), ImagePrompt("/b.png", weight=-0.5))
        check_request(GenerationRequest("a fox", image_prompts=prompts), Limits())


@given(
    weight=st.floats(allow_nan=True, allow_infinity=True),
    start=st.floats(allow_nan=True, allow_infinity=True),
    end=st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_unit_either_passes_within_bounds_or_is_refused(
    weight: float, start: float, end: float
) -> None:
    unit = _unit(weight=weight, start=start, end=end)
    try:
        check_request(GenerationRequest("a fox", controls=(unit,)), Limits())
    except UserError:
        return
    assert 0 <= weight <= 2 and 0 <= start < end <= 1


def test_units_and_image_prompts_survive_the_json_round_trip() -> None:
    request = GenerationRequest(
        "a fox",
        controls=(_unit(weight=0.5, start=0.1, end=0.9, preprocessor="canny"),),
        image_prompts=(ImagePrompt("/uploads/look.png", weight=0.7, style=True),),
    )
    assert GenerationRequest.from_json(request.to_json()) == request


@pytest.mark.parametrize("ratio", [-0.1, 0.8, float("nan")])
def test_a_token_merging_ratio_outside_tomesds_range_is_refused(ratio: float) -> None:
    from pipeline.request import GenerationRequest

    with pytest.raises(UserError, match=r"token merging ratio .* use 0 \(off\) to 0\.75"):
        check_request(GenerationRequest("a fox", token_merging=ratio), Limits())
