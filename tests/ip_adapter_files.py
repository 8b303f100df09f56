"""A tiny IP-Adapter and CLIP image encoder, laid out as h94/IP-Adapter ships the SD1.5 ones.

No real adapter can be downloaded in tests. The encoder is a transformers
`CLIPVisionModelWithProjection` saved by `save_pretrained` (h94's `models/image_encoder` is one,
ViT-H/14 with projection_dim 1024), here 32 pixels wide with projection_dim 32. The adapter has
h94's names: `image_proj.proj` (embedding -> 4 tokens of the context width), `image_proj.norm`,
and `ip_adapter.N.to_k_ip/to_v_ip.weight` with N = 1, 3, 5, ... over the UNet's attention layers
in diffusers' order (h94 counts every attention layer; the odd ones are the cross-attention
ones). For the tiny UNet (pipeline/tiny.py: blocks 32/64/64, one layer per down block, two per
up block, context 32) those are down_blocks.0 (32 wide), down_blocks.1 (64), up_blocks.1 twice
(64), up_blocks.2 twice (32), and mid_block (64). Values are random: a trained adapter's
weights are not zero, or a picture would change nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline.tiny import TINY_WIDTH

TINY_LAYER_WIDTHS = (32, 64, 64, 64, 32, 32, 64)
"""Output widths of the tiny UNet's cross-attention layers, in h94's numbering order."""
ENCODER_WIDTH = 32
"""The tiny encoder's projection_dim: the embedding width the tiny adapter reads."""
ADAPTER_FILE = "ip-adapter_sd15.safetensors"


def tiny_adapter_state(
    seed: int = 0, embed_width: int = ENCODER_WIDTH, context: int = TINY_WIDTH
) -> dict[str, torch.Tensor]:
    """h94's tensors of a base IP-Adapter for the tiny UNet, random."""
    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.3

    state = {
        "image_proj.proj.weight": random(4 * context, embed_width),
        "image_proj.proj.bias": random(4 * context),
        "image_proj.norm.weight": 1 + random(context),
        "image_proj.norm.bias": random(context),
    }
    for index, width in enumerate(TINY_LAYER_WIDTHS):
        state[f"ip_adapter.{2 * index + 1}.to_k_ip.weight"] = random(width, context)
        state[f"ip_adapter.{2 * index + 1}.to_v_ip.weight"] = random(width, context)
    return state


def write_adapter(folder: Path, seed: int = 0, **options: int) -> Path:
    """The tiny adapter as `folder/ip-adapter_sd15.safetensors`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ADAPTER_FILE
    save_file(tiny_adapter_state(seed, **options), str(path))
    return path


def write_encoder(folder: Path, seed: int = 0, projection_dim: int = ENCODER_WIDTH) -> Path:
    """A tiny `CLIPVisionModelWithProjection` folder (config.json, model.safetensors)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = CLIPVisionModelWithProjection(config).eval()
    encoder.save_pretrained(folder, safe_serialization=True)
    return folder
