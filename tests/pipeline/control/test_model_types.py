"""A ControlNet's type, guessed from the names its files ship with (lllyasviel's, Civitai's)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.control.model_types import (
    CONTROL_TYPES,
    ControlType,
    default_preprocessor,
    guess_control_type,
    parse_control_type,
)
from pipeline.errors import UserError

# The file names as lllyasviel/ControlNet-v1-1 and the community publish them (A1111's
# models/ControlNet folder holds these), with the type each model follows.
REAL_NAMES = [
    ("control_v11p_sd15_canny.safetensors", "canny"),
    ("control_v11p_sd15_canny_fp16.safetensors", "canny"),
    ("control_v11f1p_sd15_depth.pth", "depth"),
    ("control_v11p_sd15_openpose.safetensors", "openpose"),
    ("control_v11p_sd15_lineart.safetensors", "lineart"),
    ("control_v11p_sd15s2_lineart_anime.safetensors", "lineart_anime"),
    ("control_v11p_sd15_softedge.safetensors", "softedge"),
    ("control_v11p_sd15_scribble.safetensors", "scribble"),
    ("control_v11f1e_sd15_tile.safetensors", "tile"),
    ("control_v11p_sd15_normalbae.safetensors", "normal"),
    ("control_v11p_sd15_seg.safetensors", "seg"),
    ("control_v11p_sd15_mlsd.safetensors", "mlsd"),
    ("control_v11e_sd15_shuffle.safetensors", "shuffle"),
    ("control_v11e_sd15_ip2p.safetensors", "ip2p"),
    ("control_v11p_sd15_inpaint.safetensors", "inpaint"),
    ("control_sd15_canny.safetensors", "canny"),
    ("control_sd15_hed.safetensors", "softedge"),
    ("control_sd15_normal.safetensors", "normal"),
    ("control_v1p_sd15_qrcode_monster.safetensors", "qrcode"),
    ("control_v1p_sd15_brightness.safetensors", "qrcode"),
    ("controlnet11Models_openpose.safetensors", "openpose"),
    ("diffusion_pytorch_model.safetensors", "other"),
    ("my-controlnet.safetensors", "other"),
]


@pytest.mark.parametrize(("filename", "expected"), REAL_NAMES)
def test_the_type_is_guessed_from_real_file_names(filename, expected) -> None:
    assert guess_control_type(filename) == expected


def test_words_inside_other_words_do_not_count() -> None:
    # "segment" is no "seg", "tiled" no "tile", "canny" inside a longer word no canny.
    for name in ("segmented_style.safetensors", "tiled_floor.safetensors", "uncanny.safetensors"):
        assert guess_control_type(name) == ControlType.OTHER


def test_metadata_names_the_type_when_the_file_name_does_not() -> None:
    metadata = {"modelspec.title": "ControlNet depth (Midas)"}
    assert guess_control_type("diffusion_pytorch_model.safetensors", metadata) == "depth"
    assert guess_control_type("control_v11p_sd15_canny.safetensors", metadata) == "canny"


def test_the_types_are_the_sixteen_listed() -> None:
    assert CONTROL_TYPES == (
        "canny", "depth", "openpose", "lineart", "lineart_anime", "softedge", "scribble", "tile",
        "normal", "seg", "mlsd", "shuffle", "ip2p", "inpaint", "qrcode", "other",
    )  # fmt: skip


def test_a_typed_type_is_read_in_any_case_and_a_wrong_one_lists_the_types() -> None:
    assert parse_control_type(" Depth ") is ControlType.DEPTH
    with pytest.raises(UserError, match="'pose' is not a ControlNet type: use one of canny, "):
        parse_control_type("pose")


def test_a_canny_model_reads_canny_maps_and_the_others_ready_maps() -> None:
    assert default_preprocessor("canny") == "canny"
    assert {default_preprocessor(kind) for kind in CONTROL_TYPES if kind != "canny"} == {"none"}


@given(filename=st.text(max_size=300), title=st.text(max_size=300))
def test_any_name_gives_a_type(filename: str, title: str) -> None:
    assert guess_control_type(filename, {"modelspec.title": title}) in CONTROL_TYPES


@given(text=st.text(max_size=100))
def test_any_typed_text_is_a_type_or_a_user_error(text: str) -> None:
    try:
        assert parse_control_type(text) in CONTROL_TYPES
    except UserError as error:
        assert "is not a ControlNet type" in str(error)
