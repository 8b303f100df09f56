"""The weight delta each adapter family adds to one module, at weight 1.

Every family (LoRA, LoCon, LoHa, LoKr, PEFT LoRA, each optionally DoRA) reduces to a dense delta of
the module's weight shape, which is what lets one patcher serve them all. Deltas are built in
float32 whatever the file stores, because fp16 products of small factors lose the low bits that a
0.6 weight keeps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

Parts = Mapping[str, torch.Tensor]


def module_delta(
    family: str, parts: Parts, shape: torch.Size, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """The delta for a module whose weight has `shape`; ValueError when the sizes disagree.

    A DoRA module (`dora_scale`) also needs the module's pristine `weight`: its delta depends on
    the weight's norms.
    """
    raw, scale = _BUILDERS[family](parts)
    if raw.numel() != math.prod(shape):
        raise ValueError(f"delta of shape {tuple(raw.shape)} does not fit weight {tuple(shape)}")
    # A 2-D delta on a 1x1 conv (or a flattened conv delta) differs from the weight only in layout.
    delta = raw.reshape(shape) * scale
    if "dora_scale" in parts:
        if weight is None:
            raise ValueError("a DoRA delta needs the module's weight")
        delta = decomposed_delta(delta, weight.float(), parts["dora_scale"].float())
    return delta


def decomposed_delta(
    delta: torch.Tensor, weight: torch.Tensor, magnitude: torch.Tensor
) -> torch.Tensor:
    """DoRA as A1111 applies it: (W + delta) rescaled to the stored norms, minus W.

    `delta` already carries alpha/rank; the LoRA's weight multiplies the result, as in A1111.
    A1111 takes one magnitude per input column, shape (1, in), as LyCORIS writes with
    `wd_on_out=False`; LyCORIS' default is one per output row, (out, 1): the shape says which.
    """
    merged = weight + delta
    out_dim, in_dim = merged.shape[:2]
    ones = [1] * (merged.dim() - 2)
    per_column = magnitude.numel() == in_dim and (magnitude.shape[0] == 1 or in_dim != out_dim)
    if per_column:
        norm = merged.transpose(0, 1).reshape(in_dim, -1).norm(dim=1)
        shape = (1, in_dim, *ones)
    elif magnitude.numel() == out_dim:
        norm = merged.reshape(out_dim, -1).norm(dim=1)
        shape = (out_dim, 1, *ones)
    else:
        raise ValueError(f"dora_scale of shape {tuple(magnitude.shape)} fits neither side")
    return merged * (magnitude.reshape(shape) / norm.reshape(shape)) - weight


def _alpha_scale(parts: Parts, rank: int) -> float:
    """alpha / rank, where a missing or zero alpha means alpha = rank (kohya and lycoris agree)."""
    alpha = parts.get("alpha")
    value = float(alpha) if alpha is not None else 0.0
    return (value or rank) / rank


Built = tuple[torch.Tensor, float]
"""A family's raw product and the alpha/rank scale that goes with it."""


def lora_delta(parts: Parts) -> Built:
    """up @ down, scaled by alpha/rank; conv factors are flattened, a `mid` core is Tucker's."""
    down = parts["down"].float().flatten(1)
    up = parts["up"].float().flatten(1)
    scale = _alpha_scale(parts, down.shape[0])
    if "mid" in parts:
        return torch.einsum("n m ..., i n, m j -> i j ...", parts["mid"].float(), up, down), scale
    return up @ down, scale


def _tucker(core: torch.Tensor, out_factor: torch.Tensor, in_factor: torch.Tensor) -> torch.Tensor:
    """Rebuild (out, in, kh, kw) from a (rank, rank, kh, kw) core and (rank, out), (rank, in)."""
    return torch.einsum("i j ..., i p, j r -> p r ...", core.float(), out_factor, in_factor)


def loha_delta(parts: Parts) -> Built:
    """(w1_a @ w1_b) * (w2_a @ w2_b) * alpha/rank, each half a Tucker product when t1/t2 exist."""
    w1_a, w1_b = parts["w1_a"].float(), parts["w1_b"].float()
    w2_a, w2_b = parts["w2_a"].float(), parts["w2_b"].float()
    scale = _alpha_scale(parts, w1_b.shape[0])
    if "t1" in parts:
        return _tucker(parts["t1"], w1_a, w1_b) * _tucker(parts["t2"], w2_a, w2_b), scale
    return (w1_a @ w1_b.flatten(1)) * (w2_a @ w2_b.flatten(1)), scale


def lokr_delta(parts: Parts) -> Built:
    """kron(w1, w2) * alpha/rank, each side given whole or as a low-rank pair (w2 maybe Tucker).

    A file whose two sides are both whole has no rank, and lycoris then trains with scale 1.
    """
    factored = [parts[name] for name in ("w1_b", "w2_b") if name in parts]
    scale = _alpha_scale(parts, factored[0].shape[0]) if factored else 1.0
    w1 = parts["w1"].float() if "w1" in parts else parts["w1_a"].float() @ parts["w1_b"].float()
    if "w2" in parts:
        w2 = parts["w2"].float()
    elif "t2" in parts:
        w2 = _tucker(parts["t2"], parts["w2_a"].float(), parts["w2_b"].float())
    else:
        w2 = parts["w2_a"].float() @ parts["w2_b"].float().flatten(1)
    # Flattening w2's kernel axes into its columns keeps kron's element order: the caller's
    # reshape to (out, in, kh, kw) then splits each column back into (in, kh, kw).
    return torch.kron(w1, w2.flatten(1)), scale


_BUILDERS: dict[str, Callable[[Parts], Built]] = {
    "lora": lora_delta,
    "peft": lora_delta,
    "loha": loha_delta,
    "lokr": lokr_delta,
}


def delta_shape(family: str, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The shape of a module's delta from factor shapes alone; ValueError when they do not chain.

    Runs the real builder on meta tensors, so inspection checks a file's factor shapes with the
    very code that will patch, without reading or computing anything.
    """
    meta = {part: torch.empty(shape, device="meta") for part, shape in shapes.items()}
    meta.pop("alpha", None)  # a meta scalar has no value to read; the scale does not change shape
    meta.pop("dora_scale", None)  # rescales the delta, never changes its shape
    try:
        return tuple(_BUILDERS[family](meta)[0].shape)
    except (KeyError, RuntimeError, IndexError) as error:
        raise ValueError(f"factor shapes do not fit together ({error})") from None
