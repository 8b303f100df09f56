"""Small LoRA and embedding files for the tiny model (width 32), written without building it.

Two modules, named as kohya sd-scripts writes them (the text encoder with transformers 4's
`text_model` level), with the tiny architecture's shapes, which the library checks.
"""

from __future__ import annotations

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
