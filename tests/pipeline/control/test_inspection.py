"""ControlNet inspection: SD1.5 ControlNets in both layouts pass, everything else is named."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.control.inspection import inspect_controlnet
from pipeline.tiny import TINY_WIDTH
from tests.bot.library_files import write_embedding, write_lora
from tests.control_files import (
    tiny_controlnet,
    write_diffusers_layout,
    write_original_layout,
)
from tests.pipeline.control.controlnet_files import (
    SD2_CHANGES,
    diffusers_shapes,
    meta_controlnet,
    meta_sdxl_controlnet,
    meta_t2i_adapter,
    original_shapes,
    write_header_only,
)
from tests.pipeline.ldm_checkpoint import UNET_PREFIX, unet_to_ldm
from tests.pipeline.lora import make_files as mf
from tests.pipeline.lora.hypernet_files import write_hypernetwork

SD15 = "use an SD1.5 ControlNet such as control_v11p_sd15_canny"


@pytest.fixture(scope="module")
def tiny() -> Any:
    return tiny_controlnet(seed=3)


@pytest.fixture(scope="module")
def full() -> Any:
    """SD1.5's ControlNet architecture (`ControlNetModel.from_unet`), on the meta device."""
    return meta_controlnet()


def _parameters(model: Any) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize(
    ("writer", "layout"),
    [(write_diffusers_layout, "diffusers"), (write_original_layout, "original")],
)
def test_the_tiny_controlnet_passes_in_both_layouts(tmp_path, tiny, writer, layout) -> None:
    path = writer(tmp_path / "control_v11p_sd15_canny.safetensors", tiny)
    result = inspect_controlnet(path, TINY_WIDTH)
    assert result.ok, result.reason
    assert (result.layout, result.base, result.hint_channels, result.has_hint) == (
        layout,
        "sd1",
        tiny.config.conditioning_channels,
        True,
    )
    assert result.zero_convs == len(tiny.controlnet_down_blocks)
    assert result.parameters == _parameters(tiny)
    assert (result.size, result.tensors) == (path.stat().st_size, len(tiny.state_dict()))


def test_the_tiny_controlnet_is_refused_for_real_sd15_by_its_width(tmp_path, tiny) -> None:
    result = inspect_controlnet(write_diffusers_layout(tmp_path / "t.safetensors", tiny))
    assert not result.ok
    assert "text width 32" in result.reason and "768" in result.reason


@pytest.mark.parametrize("layout", ["diffusers", "original", "original without prefix"])
def test_full_size_sd15_controlnets_pass_in_every_layout(tmp_path, full, layout) -> None:
    shapes = {
        "diffusers": lambda: diffusers_shapes(full),
        "original": lambda: original_shapes(full),
        "original without prefix": lambda: original_shapes(full, prefix=""),
    }[layout]()
    path = write_header_only(tmp_path / "control_v11p_sd15_canny.safetensors", shapes)
    result = inspect_controlnet(path)
    assert result.ok, result.reason
    assert (result.layout, result.base) == (layout.split()[0], "sd1")
    # SD1.5's encoder: conv_in, 3 x (2 resnets + a downsampler), 2 resnets: 12 zero convs.
    assert (result.zero_convs, result.hint_channels) == (12, 3)
    assert result.parameters == _parameters(full)
    # lllyasviel's fp16 files (control_v11p_sd15_canny ...) are 723 MB: 361 M parameters.
    assert 722_000_000 < path.stat().st_size < 723_000_000


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_sd2_controlnets_are_refused_by_name(tmp_path, layout) -> None:
    sd2 = meta_controlnet(**SD2_CHANGES)
    # thibaud/controlnet-sd21 ships the original names without `control_model.`.
    shapes = diffusers_shapes(sd2) if layout == "diffusers" else original_shapes(sd2, prefix="")
    result = inspect_controlnet(write_header_only(tmp_path / "sd21.safetensors", shapes))
    assert (result.ok, result.base) == (False, "sd2")
    assert result.reason == f"it is an SD2.x ControlNet: Dreamcord runs SD1.5; {SD15}"


def test_sdxl_controlnets_are_refused_by_name(tmp_path, tiny) -> None:
    diffusers = write_header_only(
        tmp_path / "xl.safetensors", diffusers_shapes(meta_sdxl_controlnet())
    )
    # The original layout's SDXL files carry LDM's `label_emb` (the size embedding).
    shapes = original_shapes(tiny) | {"control_model.label_emb.0.0.weight": (1280, 2816)}
    original = write_header_only(tmp_path / "xl_original.safetensors", shapes)
    for path in (diffusers, original):
        result = inspect_controlnet(path, TINY_WIDTH)
        assert (result.ok, result.base) == (False, "sdxl")
        assert result.reason == f"it is an SDXL ControlNet: Dreamcord runs SD1.5; {SD15}"


def test_stability_control_loras_are_refused_by_name(tmp_path, tiny) -> None:
    # ComfyUI tells a control-lora by its `lora_controlnet` marker tensor.
    shapes = original_shapes(tiny, prefix="") | {"lora_controlnet": (0,)}
    result = inspect_controlnet(
        write_header_only(tmp_path / "control-lora-canny-rank128.safetensors", shapes)
    )
    assert not result.ok and "Control-LoRA" in result.reason and SD15 in result.reason


def _tiny_unet() -> Any:
    from diffusers import UNet2DConditionModel

    from pipeline.tiny import UNET_CONFIG

    with torch.device("meta"):
        return UNet2DConditionModel(**UNET_CONFIG)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: write_lora(p), "it is a LoRA, not a ControlNet: add it with `lora add`"),
        (lambda p: write_embedding(p), "textual-inversion embedding, not a ControlNet"),
        (lambda p: write_hypernetwork(p), "it is a hypernetwork, not a ControlNet"),
        (
            lambda p: write_header_only(
                p, {UNET_PREFIX + k: s for k, s in _shapes(unet_to_ldm(_tiny_unet())).items()}
            ),
            "it is a full model checkpoint, not a ControlNet: checkpoints go in MODELS_DIR",
        ),
        (
            lambda p: write_header_only(p, diffusers_shapes(_tiny_unet())),
            "it is a UNet (it has output blocks), not a ControlNet",
        ),
        (
            lambda p: write_header_only(p, diffusers_shapes(meta_t2i_adapter())),
            "it is a T2I-Adapter, not a ControlNet",
        ),
        (
            # TencentARC's own files: the adapter's names without diffusers' `adapter.`.
            lambda p: write_header_only(
                p,
                {
                    k.removeprefix("adapter."): s
                    for k, s in diffusers_shapes(meta_t2i_adapter()).items()
                },
            ),
            "it is a T2I-Adapter, not a ControlNet",
        ),
        (
            lambda p: write_header_only(p, {"encoder.conv_in.weight": (128, 3, 3, 3)}),
            "it is not a ControlNet: its tensor names (encoder.conv_in.weight) are of no",
        ),
        (lambda p: write_header_only(p, {}), "it holds no tensors"),
        (lambda p: mf.write_pickle(p), "pickle"),
        (lambda p: _write_bytes(p, b"garbage" * 100), "is not a safetensors file"),
    ],
)
def test_other_files_are_refused_with_what_they_are(tmp_path, make, words) -> None:
    path = make(tmp_path / "t2iadapter_canny_sd15v2.safetensors")
    result = inspect_controlnet(path, TINY_WIDTH)
    assert not result.ok and result.layout is None
    assert words in result.reason


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _without(shapes: dict[str, tuple[int, ...]], *prefixes: str) -> dict[str, tuple[int, ...]]:
    return {key: shape for key, shape in shapes.items() if not key.startswith(prefixes)}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            lambda s: _without(s, "controlnet_cond_embedding."),
            "it has no hint encoder (controlnet_cond_embedding.conv_in.weight)",
        ),
        (
            lambda s: _without(s, "controlnet_down_blocks.3."),
            "its zero convolutions are missing or not numbered 0..n",
        ),
        (lambda s: _without(s, "controlnet_mid_block."), "it has no middle-block output"),
        (
            lambda s: s | {"controlnet_cond_embedding.conv_in.weight": (16, 1, 3, 3)},
            "its hint encoder reads 1-channel maps",
        ),
        (lambda s: _without(s, "down_blocks.", "mid_block."), "it has no cross-attention layers"),
    ],
)
def test_incomplete_controlnets_say_what_is_missing(tmp_path, tiny, change, words) -> None:
    path = write_header_only(tmp_path / "cut.safetensors", change(diffusers_shapes(tiny)))
    result = inspect_controlnet(path, TINY_WIDTH)
    assert (result.ok, result.layout) == (False, "diffusers")
    assert words in result.reason


def test_integer_weights_are_refused(tmp_path, tiny) -> None:
    shapes = diffusers_shapes(tiny)
    path = write_header_only(
        tmp_path / "int.safetensors", shapes, dtypes={"controlnet_mid_block.weight": "I64"}
    )
    result = inspect_controlnet(path, TINY_WIDTH)
    assert not result.ok and "holds I64 values" in result.reason


def test_the_names_a_file_gives_itself_are_kept_short(tmp_path, tiny) -> None:
    metadata = {"modelspec.title": "x" * 5000, "ss_output_name": "depth", "secret": "no"}
    path = write_header_only(tmp_path / "m.safetensors", diffusers_shapes(tiny), metadata=metadata)
    kept = inspect_controlnet(path, TINY_WIDTH).metadata
    assert kept == {"modelspec.title": "x" * 200, "ss_output_name": "depth"}


# --- any header: a verdict, never an exception ---

_NAMES = [
    "controlnet_cond_embedding.conv_in.weight",
    "controlnet_cond_embedding.conv_out.weight",
    "controlnet_down_blocks.0.weight",
    "controlnet_down_blocks.1.weight",
    "controlnet_mid_block.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "add_embedding.linear_1.weight",
    "control_model.input_hint_block.0.weight",
    "control_model.input_hint_block.14.weight",
    "control_model.zero_convs.0.0.weight",
    "control_model.middle_block_out.0.weight",
    "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
    "input_hint_block.2.weight",
    "zero_convs.1.0.weight",
    "label_emb.0.0.weight",
    "lora_controlnet",
    "model.diffusion_model.input_blocks.0.0.weight",
    "up_blocks.0.resnets.0.conv1.weight",
    "adapter.body.0.resnets.0.block1.weight",
    "body.0.block1.weight",
    "lora_unet_x.lora_down.weight",
    "emb_params",
    "x",
]
_SHAPES = st.lists(st.sampled_from([0, 1, 3, 16, 32, 320]), max_size=4).filter(
    lambda shape: math.prod(shape) <= 1 << 18
)


def _write_any(path: Path, entries: dict[str, tuple[str, list[int]]]) -> Path:
    header: dict[str, object] = {}
    offset = 0
    for key, (dtype, shape) in entries.items():
        size = math.prod(shape) * {"F16": 2, "I32": 4}[dtype]
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    entries=st.dictionaries(
        st.sampled_from(_NAMES), st.tuples(st.sampled_from(["F16", "I32"]), _SHAPES), max_size=8
    ),
    width=st.sampled_from([TINY_WIDTH, 768]),
)
def test_any_header_gets_a_verdict_never_an_exception(tmp_path: Path, entries, width) -> None:
    result = inspect_controlnet(_write_any(tmp_path / "any.safetensors", entries), width)
    assert result.ok or result.reason
    assert result.tensors == len(entries)
