"""Which model modules an adapter's modules patch: the same matching at upload and at patch time.

At upload there is no loaded model, so the file is matched against the SD1.5 (or tiny)
architecture built on the meta device: names and shapes, no memory. A file that passes there
patches the real model the same way, so nothing is refused at generation time that upload took.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from pipeline.lora.deltas import delta_shape
from pipeline.lora.names import ModuleIndex

if TYPE_CHECKING:
    import torch
    from torch import nn

MAX_SKIPPED_SHARE = 0.5
"""Trainers leave a few stray keys; a file half of names the model lacks is for another model."""


def too_many_skipped(skipped: int, total: int) -> bool:
    """Whether so much of a file misses the model that it cannot be meant for it."""
    return skipped >= total or skipped >= MAX_SKIPPED_SHARE * total


@dataclass(frozen=True)
class Wanted:
    """One adapter module as a file names it, with its factor shapes."""

    component: str
    module: str
    family: str
    shapes: Mapping[str, tuple[int, ...]]


@dataclass
class Match:
    """Model path per matched module (by position in the request), and what did not match."""

    paths: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    """Modules the model has no module for: skipped when few."""
    misfit: list[int] = field(default_factory=list)
    """Modules whose delta has another size than the weight: a different architecture."""


def match_modules(wanted: Sequence[Wanted], indexes: Mapping[str, ModuleIndex]) -> Match:
    """Pair each wanted module with the model module it names, checking the delta's size."""
    match = Match()
    for position, item in enumerate(wanted):
        index = indexes.get(item.component)
        path = index.find(item.module) if index else None
        if index is None or path is None:
            match.missing.append(position)
            continue
        weight = index.shapes[path]
        if not _fits(item, weight):
            match.misfit.append(position)
            continue
        match.paths[position] = path
    return match


def _fits(item: Wanted, weight: tuple[int, ...]) -> bool:
    """Whether the delta has the weight's size, and DoRA magnitudes one side's length."""
    shapes = {part: shape for part, shape in item.shapes.items() if part != "dora_scale"}
    if math.prod(delta_shape(item.family, shapes)) != math.prod(weight):
        return False
    dora = item.shapes.get("dora_scale")
    return dora is None or math.prod(dora) in weight[:2]


def weighted_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules an adapter can patch: those with a matrix or kernel weight."""
    import torch

    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() > 1
    }


def model_indexes(unet: nn.Module, text_encoder: nn.Module) -> dict[str, ModuleIndex]:
    """The module index of a loaded UNet and text encoder."""
    return {
        "unet": _index(unet, _layers_per_block(unet)),
        "te": _index(text_encoder, None),
    }


@lru_cache(maxsize=4)
def reference_indexes(model_width: int) -> dict[str, ModuleIndex] | None:
    """Indexes of the architecture whose text width is `model_width` (SD1.5 or tiny), or None."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = _architecture_configs(model_width)
    if configs is None:
        return None
    unet_config, text_config = configs
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    return model_indexes(unet, text_encoder)


def _architecture_configs(model_width: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
    import json

    from pipeline.lora.inspection import SD1_WIDTH
    from pipeline.model_configs import config_dir
    from pipeline.tiny import TEXT_CONFIG, TINY_WIDTH, UNET_CONFIG

    if model_width == TINY_WIDTH:
        return dict(UNET_CONFIG), dict(TEXT_CONFIG)
    if model_width == SD1_WIDTH:
        configs = config_dir()
        unet = json.loads((configs / "unet" / "config.json").read_text())
        text = json.loads((configs / "text_encoder" / "config.json").read_text())
        return unet, text
    return None


def _index(model: nn.Module, layers_per_block: int | None) -> ModuleIndex:
    shapes = {
        path: tuple(cast("torch.Tensor", m.weight).shape)
        for path, m in weighted_modules(model).items()
    }
    return ModuleIndex.build(shapes, layers_per_block)


def _layers_per_block(unet: nn.Module) -> int:
    value = getattr(getattr(unet, "config", None), "layers_per_block", 2)
    return int(value if isinstance(value, int) else value[0])
