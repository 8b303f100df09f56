"""Any tensor names and shapes a file may hold: inspection answers with a verdict, never raises."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.lora.inspection import inspect_file

# Pieces of real names, so that generated keys often reach the matcher, not only the parser.
_PREFIXES = ["lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "unet.", "text_encoder.", ""]
_MODULES = [
    "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    "input_blocks_1_1_proj_in",
    "output_blocks_2_1_conv",
    "text_model_encoder_layers_0_self_attn_q_proj",
    "encoder.layers.0.mlp.fc1",
    "x",
]
_SUFFIXES = [
    ".lora_down.weight", ".lora_up.weight", ".alpha", ".dora_scale", ".hada_w1_a",
    ".lokr_w1", ".lora_A.weight", ".string_to_param.*", "", ".weight",
]  # fmt: skip
_KEYS = st.builds(
    lambda p, m, s: p + m + s,
    st.sampled_from(_PREFIXES),
    st.sampled_from(_MODULES),
    st.sampled_from(_SUFFIXES),
) | st.sampled_from(["bundle_emb.tok.string_to_param.*", "emb_params", "768.0.linear.0.weight"])
_MAX_ELEMENTS = 1 << 20
_SHAPES = st.lists(st.sampled_from([0, 1, 2, 4, 32, 320, 768]), max_size=4).filter(
    lambda shape: math.prod(shape) <= _MAX_ELEMENTS
)
"""Real layer shapes, at most a million elements each, so a file stays a few megabytes."""
_DTYPES = st.sampled_from(["F32", "F16", "I32", "BOOL"])


def _write(path: Path, entries: dict[str, tuple[str, list[int]]]) -> Path:
    """A structurally valid safetensors file with zero-filled data."""
    sizes = {"F32": 4, "F16": 2, "I32": 4, "BOOL": 1}
    header: dict[str, object] = {}
    offset = 0
    for key, (dtype, shape) in entries.items():
        count = 1
        for dim in shape:
            count *= dim
        size = count * sizes[dtype]
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=st.dictionaries(_KEYS, st.tuples(_DTYPES, _SHAPES), max_size=6))
def test_inspection_gives_a_verdict_for_any_names_and_shapes(tmp_path: Path, entries) -> None:
    result = inspect_file(_write(tmp_path / "any.safetensors", entries))
    assert result.ok or result.reason
    assert result.tensors == len(entries)
