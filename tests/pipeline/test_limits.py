"""Request limits: the RNG source and ENSD, named as A1111 names them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.errors import UserError
from pipeline.limits import MAX_ENSD, Limits, check_request
from pipeline.request import GenerationRequest, HiresSpec, InpaintSpec, Mode


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
