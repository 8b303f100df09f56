"""Fixtures: the tiny model and adapter files generated for it, plus full-size SD-shaped files."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.pipeline.lora import make_files as mf

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_RANK = 4
TINY_ALPHA = 2.0


@pytest.fixture(scope="session")
def tiny() -> dict[str, Any]:
    """The tiny model's parts. Tests that patch it must leave it as they found it."""
    from pipeline.tiny import build_tiny_components

    return build_tiny_components()


@pytest.fixture(scope="session")
def tiny_files(tiny: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per adapter kind for the tiny model, keyed by kind."""
    folder = tmp_path_factory.mktemp("tiny-loras")
    unet, text = tiny["unet"], tiny["text_encoder"]
    attention, with_convs = mf.unet_targets(unet), mf.unet_targets(unet, conv=True)
    texts = mf.text_targets(text)

    def kohya(unet_modules: list, maker: mf.PartsMaker, alpha: float | None = TINY_ALPHA) -> dict:
        return mf.kohya_tensors(unet_modules, texts, maker, TINY_RANK, alpha)

    made = {
        "lora": kohya(attention, mf.lora_parts),
        "lora_no_alpha": kohya(attention, mf.lora_parts, alpha=None),
        "locon": kohya(with_convs, mf.lora_parts),
        "locon_mid": kohya(with_convs, partial(mf.lora_parts, mid=True)),
        "loha": kohya(with_convs, mf.loha_parts),
        "loha_tucker": kohya(with_convs, partial(mf.loha_parts, tucker=True)),
        "lokr": kohya(with_convs, mf.lokr_parts),
        "lokr_tucker": kohya(with_convs, partial(mf.lokr_parts, tucker=True)),
        "peft": mf.peft_tensors(attention, texts, TINY_RANK),
        "diffusers_2023": mf.diffusers_2023_tensors(attention, texts, TINY_RANK),
    }
    metadata = mf.tag_metadata({"sks dog": 12, "grass": 3, "outdoors": 3})
    return {
        kind: mf.write(folder / f"{kind}.safetensors", tensors, metadata)
        for kind, tensors in made.items()
    }


@pytest.fixture(scope="session")
def full_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Rank-1 files with the real SD1.5 shapes (every module), plus SD2- and SDXL-shaped ones."""
    folder = tmp_path_factory.mktemp("full-loras")
    unet, text = mf.meta_models("sd1")
    attention, with_convs = mf.unet_targets(unet), mf.unet_targets(unet, conv=True)
    texts = mf.text_targets(text)

    def half(tensors: mf.Tensors) -> mf.Tensors:
        return {name: tensor.half() for name, tensor in tensors.items()}

    made = {
        "lora": mf.kohya_tensors(attention, texts, mf.lora_parts, 1, 1.0),
        "locon": mf.kohya_tensors(with_convs, texts, mf.lora_parts, 1, 1.0),
        "loha": mf.kohya_tensors(with_convs, texts, mf.loha_parts, 1, 1.0),
        "lokr": mf.kohya_tensors(with_convs, texts, mf.lokr_parts, 1, 1.0),
        "peft": mf.peft_tensors(attention, texts, 1),
    }
    sd2_unet, sd2_text = mf.meta_models("sd2")
    cross = [m for m in mf.unet_targets(sd2_unet) if "attn2" in m[0]]
    made["sd2"] = mf.kohya_tensors(cross, mf.text_targets(sd2_text)[:6], mf.lora_parts, 1, 1.0)
    files = {kind: mf.write(folder / f"{kind}.safetensors", half(t)) for kind, t in made.items()}
    files["sdxl"] = mf.write(folder / "sdxl.safetensors", mf.sdxl_tensors())
    return files


@pytest.fixture
def fixed_inputs(tiny: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Fixed tokens, latents and timestep for comparing model outputs."""
    generator = torch.Generator().manual_seed(1)
    ids = tiny["tokenizer"](
        "a photo of a dog", padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    return {
        "ids": ids,
        "latents": torch.randn(1, 4, 8, 8, generator=generator),
        "timestep": torch.tensor(500),
    }
