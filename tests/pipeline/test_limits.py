"""Request limits: the RNG source and ENSD, named as A1111 names them."""

from __future__ import annotations

import pytest

from pipeline.errors import UserError
from pipeline.limits import MAX_ENSD, Limits, check_request
from pipeline.request import GenerationRequest


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
