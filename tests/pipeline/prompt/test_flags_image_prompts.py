"""`--iw` and `--sref`: Midjourney's image weight and style reference flags."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.prompt.flags import extract_flags, image_weight
from pipeline.prompt.limits import PromptLimits

LIMITS = PromptLimits()


@pytest.mark.parametrize(
    ("iw", "weight"), [("0", 0.0), ("0.5", 0.5), ("1", 1.0), ("2", 1.5), ("3", 2.0)]
)
def test_midjourneys_iw_range_maps_onto_0_to_2_keeping_1(iw: str, weight: float) -> None:
    scan = extract_flags(f"a fox --iw {iw}", LIMITS)
    assert scan.errors == () and scan.text == "a fox"
    assert scan.values == {"image_weight": weight}


@pytest.mark.parametrize("iw", ["3.5", "-1", "two", "nan", "1e9"])
def test_an_iw_out_of_midjourneys_range_is_an_error_naming_it(iw: str) -> None:
    (error,) = extract_flags(f"a fox --iw {iw}", LIMITS).errors
    assert error.startswith(f"--iw {iw}: use a number from 0 to 3")


def test_sref_takes_one_word_and_leaves_the_rest_in_the_prompt() -> None:
    scan = extract_flags("a fox --sref 12:3 in the snow", LIMITS)
    assert scan.values == {"sref": "12:3"} and scan.text == "a fox in the snow"


def test_sref_without_a_value_says_what_to_write() -> None:
    (error,) = extract_flags("a fox --sref", LIMITS).errors
    assert "--sref needs a value" in error and "/history" in error


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 3, allow_nan=False))
def test_the_mapping_is_monotonic_and_stays_within_0_to_2(iw: float) -> None:
    assert 0 <= image_weight(iw) <= 2
    assert image_weight(iw) <= image_weight(min(3.0, iw + 0.1))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30))
def test_any_iw_or_sref_text_is_a_value_or_an_error(iw: str, sref: str) -> None:
    scan = extract_flags(f"a fox --iw {iw} --sref {sref}", LIMITS)
    if "image_weight" in scan.values:
        assert 0 <= scan.values["image_weight"] <= 2
    if "sref" in scan.values:
        assert scan.values["sref"] and not any(c.isspace() for c in scan.values["sref"])
    assert scan.values or scan.errors
