"""Load a checked hypernetwork file into A1111's MLPs, and apply them to a UNet for one batch.

A1111 runs, in every attention layer, `to_k(mlp_k(context))` and `to_v(mlp_v(context))` where
context is the text for cross-attention and the layer's own input for self-attention, and each
MLP computes x + layers(x) * strength. Several hypernetworks chain in prompt order. Here that is
a forward pre-hook on each `to_k`/`to_v` whose input width has MLPs; the hooks are removed on
exit, also when the body raises, so the UNet is exactly what it was.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from pipeline.errors import UserError
from pipeline.lora.adapter import file_sha256
from pipeline.lora.header import read_header
from pipeline.lora.hypernet_layout import (
    ACTIVATIONS,
    Layer,
    looks_like_hypernetwork,
    parse_key,
    read_layout,
)

HypernetUse = tuple["Hypernetwork", float]
"""A loaded hypernetwork with its strength."""


@dataclass(frozen=True)
class Hypernetwork:
    """A checked file's MLPs by input width: (key MLP, value MLP), fp32, in eval mode."""

    sha256: str
    mlps: dict[int, tuple[nn.Sequential, nn.Sequential]]

    @property
    def nbytes(self) -> int:
        return sum(
            p.nbytes for pair in self.mlps.values() for mlp in pair for p in mlp.parameters()
        )


def load_hypernetwork(
    path: Path, model_widths: Sequence[int], sha256: str | None = None
) -> Hypernetwork:
    """Check `path` against the model's attention widths and build its MLPs on the CPU."""
    header = read_header(path)
    if not looks_like_hypernetwork(header):
        raise UserError(f"{path.name} is not a hypernetwork (its tensor names are not)")
    layout = read_layout(header, model_widths)
    if isinstance(layout, str):
        raise UserError(f"{path.name} cannot be used: {layout}")
    states: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as file:
        for name in header.tensors:
            parsed = parse_key(name)
            assert parsed is not None
            width, half, part = parsed
            states.setdefault((width, half), {})[part] = file.get_tensor(name).float()
    mlps = {}
    for width in layout.widths:
        pair = []
        for half in (0, 1):
            mlp = build_mlp(width, layout.layers(width))
            mlp.load_state_dict(states[width, half])
            pair.append(mlp.eval().requires_grad_(False))
        mlps[width] = (pair[0], pair[1])
    return Hypernetwork(sha256 or file_sha256(path), mlps)


def build_mlp(width: int, layers: Sequence[Layer]) -> nn.Sequential:
    """An fp32 Sequential with A1111's module at every index, so state-dict keys line up."""
    modules: list[nn.Module] = []
    features = width
    for layer in layers:
        if layer.kind == "linear":
            modules.append(nn.Linear(features, layer.features))
            features = layer.features
        elif layer.kind == "norm":
            modules.append(nn.LayerNorm(layer.features))
        elif layer.kind == "activation":
            modules.append(getattr(nn, ACTIVATIONS[layer.activation])())
        else:
            modules.append(nn.Identity())  # dropout: inference only
    return nn.Sequential(*modules)


def projection_widths(unet: nn.Module) -> set[int]:
    """The input widths of the UNet's attention key/value projections."""
    return {
        projection.in_features
        for module in unet.modules()
        for name in ("to_k", "to_v")
        if isinstance(projection := getattr(module, name, None), nn.Linear)
    }


@contextmanager
def apply_hypernetworks(unet: nn.Module, uses: Sequence[HypernetUse]) -> Iterator[None]:
    """Hook every attention key/value projection of `unet` whose input width has MLPs.

    A strength of 0 adds no hook, so such a batch is bit-for-bit one without the hypernetwork.
    The MLPs stay on the CPU in the cache; each is copied once per batch to the device the
    projection's input is on (with CPU offload, that is known only when the UNet runs).
    """
    chains: dict[int, list[tuple[nn.Sequential, nn.Sequential, float]]] = {}
    for hypernetwork, strength in uses:
        if strength:
            for width, (key, value) in hypernetwork.mlps.items():
                chains.setdefault(width, []).append((key, value, strength))
    placed = _Placed()
    handles = []
    try:
        for module in unet.modules():
            for half, name in enumerate(("to_k", "to_v")):
                projection = getattr(module, name, None)
                if isinstance(projection, nn.Linear) and projection.in_features in chains:
                    pairs = chains[projection.in_features]
                    chain = [((key, value)[half], strength) for key, value, strength in pairs]
                    handles.append(projection.register_forward_pre_hook(_hook(chain, placed)))
        yield
    finally:
        for handle in handles:
            handle.remove()


class _Placed:
    """Each MLP's copy on a device, made on first use within one batch."""

    def __init__(self) -> None:
        self._copies: dict[tuple[int, torch.device], nn.Sequential] = {}

    def on(self, mlp: nn.Sequential, device: torch.device) -> nn.Sequential:
        if device.type == "cpu":
            return mlp
        key = (id(mlp), device)
        if key not in self._copies:
            self._copies[key] = copy.deepcopy(mlp).to(device)
        return self._copies[key]


def _hook(chain: list[tuple[nn.Sequential, float]], placed: _Placed) -> Any:
    """The pre-hook: the projection's input through each MLP in turn, computed in fp32."""

    def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        out = x.float()
        for mlp, strength in chain:
            out = out + placed.on(mlp, x.device)(out) * strength
        return (out.to(x.dtype), *args[1:])

    return hook
