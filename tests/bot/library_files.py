"""Small LoRA and embedding files for the tiny model (width 32), written without building it.

Two modules, named as kohya sd-scripts writes them (the text encoder with transformers 4's
`text_model` level), with the tiny architecture's shapes, which the library checks.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from tests.pipeline.lora import make_files as mf

WIDTH = 32
MODULES = {
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (WIDTH, WIDTH),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": (32, WIDTH),
}


def write_lora(path: Path, seed: int = 0, output_name: str | None = "test-subject") -> Path:
    """A kohya LoRA of rank 4, with kohya metadata naming it `output_name` when given."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, shape in MODULES.items():
        for part, tensor in mf.lora_parts(torch.Size(shape), 4, generator).items():
            tensors[f"{module}.{part}"] = tensor
        tensors[f"{module}.alpha"] = torch.tensor(2.0)
    metadata = mf.tag_metadata({"sks dog": 12, "grass": 3})
    if output_name is None:
        del metadata["ss_output_name"]
    else:
        metadata["ss_output_name"] = output_name
    return mf.write(path, tensors, metadata)


def write_embedding(path: Path, count: int = 2, seed: int = 0) -> Path:
    return mf.write_embedding(path, WIDTH, count, seed=seed)


def write_crafted_loras(folder: Path) -> list[Path]:
    """A valid kohya LoRA damaged in the ways that once stopped the bot from starting: a
    rank-0 factor, a non-scalar alpha, a list as dtype, hostile training metadata, a header of
    nested brackets, a number of thousands of digits, a tensor named twice."""
    valid = write_lora(folder / "valid.tmp", output_name=None)
    header, data = split_safetensors(valid.read_bytes())
    valid.unlink()
    down = next(key for key in header if key.endswith("lora_down.weight"))
    alpha = next(key for key in header if key.endswith(".alpha"))
    damaged: dict[str, dict] = {
        "rank-0": {down: {**header[down], "shape": [0, WIDTH], "data_offsets": [0, 0]}},
        "wide-alpha": {alpha: {**header[alpha], "shape": [2, 2]}},
        "list-dtype": {down: {**header[down], "dtype": []}},
        "nested-tags": {"__metadata__": {"ss_tag_frequency": "[" * 100_000}},
    }
    paths = [
        join_safetensors(folder / f"{name}.safetensors", {**header, **change}, data)
        for name, change in damaged.items()
    ]
    raw = {
        "nested-header": "[" * 100_000 + "]" * 100_000,
        "long-number": '{"a": {"dtype": "F32", "shape": ['
        + "9" * 5000
        + '], "data_offsets": [0, 4]}}',
        "named-twice": '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
        '"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
    }
    for name, text in raw.items():
        path = folder / f"{name}.safetensors"
        path.write_bytes(struct.pack("<Q", len(text)) + text.encode() + b"\0" * 4)
        paths.append(path)
    return paths


def split_safetensors(raw: bytes) -> tuple[dict, bytes]:
    """(header, data section) of a safetensors file's bytes."""
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def join_safetensors(path: Path, header: object, data: bytes) -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path
