"""The IP-Adapter and image encoder settings: every bad pair refused at start with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from bot.settings import load_settings
from pipeline.errors import UserError
from pipeline.image_prompts.files import locate_image_prompt_files
from pipeline.image_prompts.layout import adapter_layout, check_fits
from pipeline.lora.header import Header, TensorEntry
from tests.ip_adapter_files import (
    ADAPTER_FILE,
    TINY_LAYER_WIDTHS,
    tiny_adapter_state,
    write_adapter,
    write_encoder,
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pair")
    return write_adapter(folder / "adapter"), write_encoder(folder / "encoder")


def test_a_matching_pair_is_located_with_its_layout(pair) -> None:
    adapter, encoder = pair
    files = locate_image_prompt_files(str(adapter), str(encoder))
    assert files is not None
    assert files.layout.layer_widths == TINY_LAYER_WIDTHS
    assert files.layout.embed_width == 32 and files.layout.context_width == 32
    assert files.layout.parameters == sum(t.numel() for t in tiny_adapter_state().values())


def test_neither_set_means_image_prompts_are_off() -> None:
    assert locate_image_prompt_files(None, None) is None


def test_an_adapter_without_its_encoder_is_refused(pair) -> None:
    with pytest.raises(UserError, match="IP_ADAPTER is set but IMAGE_ENCODER is not"):
        locate_image_prompt_files(str(pair[0]), None)


def test_an_encoder_of_another_width_is_refused(pair, tmp_path: Path) -> None:
    other = write_encoder(tmp_path / "wide", projection_dim=48)
    with pytest.raises(UserError, match=r"projects images to 48 values but .* reads 32"):
        locate_image_prompt_files(str(pair[0]), str(other))


def test_settings_refuse_a_lone_adapter_at_start_naming_the_fix(pair) -> None:
    with pytest.raises(UserError, match="IMAGE_ENCODER to its encoder"):
        load_settings(None, ip_adapter=str(pair[0]))


def test_pickled_weights_are_refused(pair, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"only \.safetensors"):
        locate_image_prompt_files(str(tmp_path / "ip-adapter_sd15.bin"), str(pair[1]))
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((pair[1] / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UserError, match=r"no model\.safetensors"):
        locate_image_prompt_files(str(pair[0]), str(folder))


def test_a_missing_file_is_not_looked_for_online(pair) -> None:
    with pytest.raises(UserError, match="neither a file nor in the hub cache"):
        locate_image_prompt_files("h94/IP-Adapter/models/nothing-here.safetensors", str(pair[1]))


def test_an_encoder_that_is_no_vision_model_is_refused(pair, tmp_path: Path) -> None:
    folder = write_encoder(tmp_path / "text")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["CLIPTextModel"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="is a CLIPTextModel"):
        locate_image_prompt_files(str(pair[0]), str(folder))


def test_a_plus_adapter_is_refused_by_name(tmp_path: Path, pair) -> None:
    state = tiny_adapter_state()
    state["image_proj.latents"] = torch.zeros(1, 16, 32)
    save_file(state, str(tmp_path / ADAPTER_FILE))
    with pytest.raises(UserError, match="IP-Adapter Plus"):
        locate_image_prompt_files(str(tmp_path / ADAPTER_FILE), str(pair[1]))


def test_an_sdxl_adapter_does_not_fit_an_sd15_model(pair) -> None:
    files = locate_image_prompt_files(str(pair[0]), str(pair[1]))
    assert files is not None
    with pytest.raises(UserError, match="context is 768 wide"):
        check_fits(files.layout, "x", 768, TINY_LAYER_WIDTHS, 32)
    with pytest.raises(UserError, match="for another model"):
        check_fits(files.layout, "x", 32, TINY_LAYER_WIDTHS[:-1], 32)


def _header(tensors: dict[str, tuple[int, ...]]) -> Header:
    entries = {name: TensorEntry("F16", shape, 0, 0) for name, shape in tensors.items()}
    return Header(entries, {}, 0)


_names = st.sampled_from(
    [
        "image_proj.proj.weight",
        "image_proj.proj.bias",
        "image_proj.norm.weight",
        "image_proj.norm.bias",
        "image_proj.latents",
        "ip_adapter.1.to_k_ip.weight",
        "ip_adapter.1.to_v_ip.weight",
        "ip_adapter.3.to_k_ip.weight",
        "ip_adapter.2.to_v_ip.weight",
        "lora_unet_x.lora_up.weight",
    ]
)
_shapes = st.lists(st.integers(0, 200), min_size=0, max_size=3).map(tuple)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_names, _shapes, max_size=10))
def test_any_header_gives_a_layout_or_a_user_error(tensors) -> None:
    try:
        layout = adapter_layout(_header(tensors), "file.safetensors")
    except UserError as error:
        assert "file.safetensors" in str(error)
    else:
        assert len(layout.layer_widths) * 2 + 4 == len(tensors)
