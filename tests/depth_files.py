"""Tiny depth-estimation models built from transformers configs, saved as the hub folders are:
what `DATA_DIR/annotators/depth` holds (config.json, preprocessor_config.json, safetensors)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    DPTConfig,
    DPTForDepthEstimation,
    DPTImageProcessorPil,
)

SIDE = 56
"""The processor's input side: a multiple of both models' patch sizes (8 and 14)."""


def tiny_depth_model(kind: str, seed: int = 0) -> torch.nn.Module:
    """A random DPT (MiDaS's architecture) or Depth Anything of a few thousand weights."""
    torch.manual_seed(seed)
    if kind == "dpt":
        return DPTForDepthEstimation(
            DPTConfig(
                hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
                image_size=32, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
                neck_hidden_sizes=[16, 16, 32, 32], reassemble_factors=[4, 2, 1, 0.5],
                fusion_hidden_size=16, head_in_index=-1,
            )
        ).eval()  # fmt: skip
    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
        image_size=SIDE, patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False,
    )  # fmt: skip
    return DepthAnythingForDepthEstimation(
        DepthAnythingConfig(
            backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[16, 16, 32, 32],
            fusion_hidden_size=16, head_hidden_size=8,
        )
    ).eval()  # fmt: skip


def write_depth_folder(folder: Path, kind: str = "dpt", seed: int = 0) -> Path:
    """`folder` holding a tiny model of `kind` in safetensors and its image processor."""
    tiny_depth_model(kind, seed).save_pretrained(folder, safe_serialization=True)
    DPTImageProcessorPil(
        size={"height": SIDE, "width": SIDE}, keep_aspect_ratio=False
    ).save_pretrained(folder)
    return folder
