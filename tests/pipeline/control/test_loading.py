"""ControlNet files loaded for the running UNet: both layouts, refusals, dtype and the cache.

The reference for the original layout is diffusers' own `convert_controlnet_checkpoint`; the
files come from tests/control_files.py, written the way the ControlNet 1.1 and diffusers
releases ship them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from pipeline.control.loading import ControlNetCache, load_controlnet
from pipeline.errors import UserError
from pipeline.tiny import UNET_CONFIG, build_tiny_components
from tests.control_files import tiny_controlnet, write_diffusers_layout, write_original_layout


@pytest.fixture(scope="module")
def unet() -> Any:
    return build_tiny_components()["unet"]


@pytest.fixture(scope="module")
def controlnet() -> Any:
    return tiny_controlnet(seed=4)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, controlnet: Any) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("controlnet-files")
    return {
        "original": write_original_layout(folder / "original.safetensors", controlnet),
        "diffusers": write_diffusers_layout(folder / "diffusers.safetensors", controlnet),
    }


def assert_same_weights(model: Any, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_either_layout_loads_the_weights_it_was_written_from(unet, controlnet, files, layout):
    assert_same_weights(load_controlnet(files[layout], unet), controlnet.state_dict())


def test_the_original_layout_loads_as_diffusers_own_converter_reads_it(unet, controlnet, files):
    converted = convert_controlnet_checkpoint(load_file(files["original"]), controlnet.config)
    assert_same_weights(load_controlnet(files["original"], unet), converted)


def test_the_controlnet_takes_the_unets_dtype(controlnet, files) -> None:
    half = build_tiny_components()["unet"].to(torch.float16)
    loaded = load_controlnet(files["original"], half)
    assert {tensor.dtype for tensor in loaded.state_dict().values()} == {torch.float16}


def test_beside_an_inpainting_unet_it_reads_4_latent_channels(files) -> None:
    nine = build_tiny_components(in_channels=9)["unet"]
    assert load_controlnet(files["diffusers"], nine).conv_in.in_channels == 4


def test_a_file_for_another_model_width_is_refused_with_what_differs(unet, tmp_path) -> None:
    wider: Any = UNet2DConditionModel(**UNET_CONFIG | {"cross_attention_dim": 64})
    other = write_original_layout(
        tmp_path / "sd2-like.safetensors", ControlNetModel.from_unet(wider)
    )
    with pytest.raises(
        UserError, match=r"made for another model width: .*\(32, 64\), this model needs \(32, 32\)"
    ):
        load_controlnet(other, unet)


def test_a_file_that_is_no_controlnet_is_refused(unet, tmp_path) -> None:
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.lora_down.weight": torch.zeros(4, 8)}, str(path))
    with pytest.raises(UserError, match="does not fit this model: .* weights missing"):
        load_controlnet(path, unet)


def test_a_controlnet_missing_some_weights_is_refused(unet, controlnet, tmp_path) -> None:
    state = dict(controlnet.state_dict())
    del state["controlnet_mid_block.weight"]
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(
        UserError, match=r"1 weights missing \(such as controlnet_mid_block.weight\)"
    ):
        load_controlnet(path, unet)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=512), cut=st.integers(min_value=0, max_value=4096))
def test_any_damaged_file_is_a_user_error(unet, files, tmp_path, data, cut) -> None:
    """Random bytes, and the real file cut short at either end: never a crash."""
    whole = files["original"].read_bytes()
    for index, content in enumerate((data, whole[:cut], whole[: len(whole) - cut - 1])):
        path = tmp_path / f"damaged{index}.safetensors"
        path.write_bytes(content)
        with pytest.raises(UserError):
            load_controlnet(path, unet)


def test_the_cache_keeps_a_file_by_its_hash_and_the_unets_shape(unet, files) -> None:
    cache = ControlNetCache(keep=2)
    first = cache.load(files["original"], "aa", unet)
    assert cache.load(files["diffusers"], "aa", unet) is first  # renamed: the same content
    nine = build_tiny_components(in_channels=9)["unet"]
    assert cache.load(files["original"], "aa", nine) is not first
    half = build_tiny_components()["unet"].to(torch.float16)
    cache.load(files["original"], "aa", half)
    assert len(cache) == 2
    assert cache.load(files["original"], "aa", unet) is not first  # the oldest went first


def test_a_file_gone_from_the_library_is_a_user_error(unet, tmp_path) -> None:
    with pytest.raises(UserError, match="gone from the library"):
        ControlNetCache().load(tmp_path / "gone.safetensors", "bb", unet)
