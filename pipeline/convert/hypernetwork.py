"""A1111 hypernetworks (`.pt`) flattened into Dreamcord's agreed `.safetensors` layout.

A1111 saves a dict whose int keys are cross-attention context widths (320, 640, 768, 1024, 1280),
each a pair of MLP state dicts (index 0 projects the keys, 1 the values), beside plain fields
such as `name`, `layer_structure`, `activation_func` and `is_layer_norm`. The layout, which the
hypernetwork loader reads exactly as written here:

- tensors: `"{width}.{index}.{state dict key}"`, for example `768.0.linear.0.weight` or
  `768.1.linear.2.bias`; the state dict keys are kept as the file has them;
- metadata (`__metadata__`, text to text): `"format": "dreamcord-hypernetwork"`, and for each
  non-tensor top-level field present in the `.pt`, the field name mapped to `json.dumps(value)`,
  for example `"layer_structure": "[1, 2, 1]"`, `"activation_func": "\\"relu\\""`,
  `"is_layer_norm": "false"`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from pipeline.errors import UserError

FORMAT = "dreamcord-hypernetwork"
PAIR = 2
"""Each width has a key projection (index 0) and a value projection (index 1)."""


def is_hypernetwork(obj: Mapping[Any, Any]) -> bool:
    """An A1111 hypernetwork: some int key holds a pair of tensor state dicts."""
    return any(type(key) is int and _is_pair(value) for key, value in obj.items())


def flatten(obj: Mapping[Any, Any], name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of the agreed layout; UserError for a field it cannot hold."""
    tensors: dict[str, torch.Tensor] = {}
    metadata = {"format": FORMAT}
    for key, value in obj.items():
        if type(key) is int:
            if key <= 0 or not _is_pair(value):
                raise UserError(f"{name}: width {key} does not hold two layer state dicts")
            for index, state in enumerate(value):
                tensors |= {f"{key}.{index}.{part}": t for part, t in state.items()}
        elif isinstance(key, str) and key != "format":
            metadata[key] = _field(key, value, name)
        else:
            raise UserError(f"{name}: unexpected hypernetwork entry {key!r}")
    return tensors, metadata


def widths(tensors: Mapping[str, torch.Tensor]) -> list[int]:
    return sorted({int(key.split(".", 1)[0]) for key in tensors})


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == PAIR
        and all(
            isinstance(state, dict)
            and state
            and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in state.items())
            for state in value
        )
    )


def _field(key: str, value: object, name: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        raise UserError(f"{name}: hypernetwork field {key!r} is not plain data") from None
