"""Hypernetwork fixtures made as A1111 makes them, then written in Dreamcord's agreed layout.

`A1111Module` follows the recipe of A1111's HypernetworkModule (modules/hypernetworks/
hypernetwork.py): per step of the layer structure a Linear, then the activation (not after the
last Linear unless `activate_output`), then LayerNorm when enabled, then Dropout where the
dropout structure says. Its state dict is what A1111 pickles into a `.pt`; `write_converted` is
this test suite's own small stand-in for `dreamcord convert`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.Hardswish, "tanh": nn.Tanh, "mish": nn.Mish}


class A1111Module(nn.Module):
    """One key or value MLP, as A1111 builds it; forward is x + mlp(x) * multiplier."""

    def __init__(
        self,
        width: int,
        structure: Sequence[float] = (1, 2, 1),
        activation: str | None = "relu",
        layer_norm: bool = False,
        activate_output: bool = False,
        dropout: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.multiplier = 1.0
        layers: list[nn.Module] = []
        steps = len(structure) - 1
        for i in range(steps):
            features = int(width * structure[i + 1])
            layers.append(nn.Linear(int(width * structure[i]), features))
            last = i >= steps - 1
            if activation not in (None, "linear") and (not last or activate_output):
                layers.append(ACTIVATIONS[activation]())
            if layer_norm:
                layers.append(nn.LayerNorm(features))
            if dropout is not None and dropout[i + 1] > 0:
                layers.append(nn.Dropout(p=dropout[i + 1]))
        self.linear = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x) * self.multiplier


def a1111_hypernetwork(
    widths: Sequence[int],
    *,
    seed: int = 0,
    scale: float = 0.2,
    **options: Any,
) -> tuple[dict[Any, Any], dict[int, tuple[A1111Module, A1111Module]]]:
    """The dict A1111 saves (int width keys -> [key state, value state], plus its fields), and
    the modules it came from, in eval mode, as the reference to compare against.

    Weights are drawn with std `scale` (A1111 starts at 0.01; training moves them) so that the
    effect is visible on the tiny model.
    """
    torch.manual_seed(seed)
    modules = {}
    saved: dict[Any, Any] = {}
    for width in widths:
        pair = (A1111Module(width, **options), A1111Module(width, **options))
        for module in pair:
            for parameter in module.parameters():
                nn.init.normal_(parameter, std=scale)
            module.eval()
        modules[width] = pair
        saved[width] = [pair[0].state_dict(), pair[1].state_dict()]
    saved.update(
        name="fixture",
        layer_structure=list(options.get("structure", (1, 2, 1))),
        activation_func=options.get("activation", "relu"),
        is_layer_norm=options.get("layer_norm", False),
        weight_initialization="Normal",
        use_dropout=options.get("dropout") is not None,
        dropout_structure=list(options["dropout"]) if options.get("dropout") else None,
        activate_output=options.get("activate_output", False),
        last_layer_dropout=False,
        step=1000,
        sd_checkpoint="1a2b3c4d",
        sd_checkpoint_name="v1-5-pruned-emaonly",
        optional_info=None,
    )
    return saved, modules


def write_converted(saved: dict[Any, Any], path: Path, drop: Sequence[str] = ()) -> Path:
    """A1111's dict in the agreed `.safetensors` layout; `drop` leaves metadata fields out."""
    tensors = {}
    metadata = {"format": "dreamcord-hypernetwork"}
    for key, value in saved.items():
        if isinstance(key, int):
            for half, state in enumerate(value):
                for name, tensor in state.items():
                    tensors[f"{key}.{half}.{name}"] = tensor.detach().clone().contiguous()
        elif key not in drop:
            metadata[key] = json.dumps(value)
    save_file(tensors, str(path), metadata=metadata)
    return path


def write_hypernetwork(path: Path, widths: Sequence[int] = (32, 64), **options: Any) -> Path:
    """A converted A1111 hypernetwork for the tiny model (its attention widths are 32 and 64)."""
    saved, _ = a1111_hypernetwork(widths, **options)
    return write_converted(saved, path)
