"""ControlNet-like files the library must recognise or refuse, written as headers with real shapes.

Inspection reads the header only, so a full-size file need not hold real weights: the state dict
of a model built on the meta device gives the names and shapes, and the data section is a sparse
hole of the right length (a 723 MB fp16 SD1.5 ControlNet takes no disk). The models are built as
diffusers builds them (`ControlNetModel.from_unet` over a `UNet2DConditionModel` config, SDXL's
`text_time` embedding, `T2IAdapter`), and the original layout's names come from
`tests.control_files.original_names`, the inverse of diffusers' converter.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tests.control_files import ORIGINAL_PREFIX, original_names

SD15_UNET = Path(__file__).resolve().parents[3] / "pipeline/configs/sd15/unet/config.json"
DTYPES = {torch.float16: ("F16", 2), torch.float32: ("F32", 4)}
SD2_CHANGES = {
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
}
"""What `stabilityai/stable-diffusion-2-1`'s UNet config changes from SD1.5's."""
SDXL_CONTROLNET = {
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "cross_attention_dim": 2048,
    "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
"""`diffusers/controlnet-canny-sdxl-1.0`'s config, as far as it differs from the defaults."""


def sd15_unet_config(**changes: Any) -> dict[str, Any]:
    config = json.loads(SD15_UNET.read_text())
    config = {key: value for key, value in config.items() if not key.startswith("_")}
    return {**config, **changes}


def meta_controlnet(**changes: Any) -> Any:
    """A full-size ControlNet (SD1.5's UNet config with `changes`), weights on the meta device."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd15_unet_config(**changes))
        return ControlNetModel.from_unet(unet, load_weights_from_unet=False)


def meta_sdxl_controlnet() -> Any:
    from diffusers import ControlNetModel

    with torch.device("meta"):
        return ControlNetModel(**SDXL_CONTROLNET)


def meta_t2i_adapter() -> Any:
    """TencentARC's SD1.5 T2I-Adapter (`t2iadapter_canny_sd15v2`) as diffusers builds it."""
    from diffusers import T2IAdapter

    with torch.device("meta"):
        return T2IAdapter(in_channels=1, channels=[320, 640, 1280, 1280], num_res_blocks=2)


def shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


def diffusers_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    return shapes_of(model.state_dict())


def original_shapes(controlnet: Any, prefix: str = ORIGINAL_PREFIX) -> dict[str, tuple[int, ...]]:
    """The original layout's names and shapes, under `prefix` (`control_model.` or none)."""
    return {
        prefix + key.removeprefix(ORIGINAL_PREFIX): shape
        for key, shape in shapes_of(original_names(controlnet)).items()
    }


def write_header_only(
    path: Path,
    shapes: Mapping[str, tuple[int, ...]],
    dtype: str = "F16",
    metadata: Mapping[str, str] | None = None,
    dtypes: Mapping[str, str] | None = None,
) -> Path:
    """A valid `.safetensors` file of these tensors whose data is a sparse run of zeros."""
    sizes = {"F16": 2, "F32": 4, "BF16": 2, "I64": 8}
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key, shape in shapes.items():
        kind = (dtypes or {}).get(key, dtype)
        end = offset + math.prod(shape) * sizes[kind]
        header[key] = {"dtype": kind, "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as file:
        file.write(struct.pack("<Q", len(raw)) + raw)
        file.truncate(8 + len(raw) + offset)
    return path
