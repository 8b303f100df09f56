"""Apply adapters to a model for one batch by adding their deltas into the weights, then restore.

Patching costs once per batch and nothing per step, and works the same for every family. The
pristine weights of exactly the touched modules are copied aside first and copied back on exit,
also when the body raises, so the model is bit-for-bit what it was before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.lora.adapter import Adapter, ModuleFactors
from pipeline.lora.deltas import module_delta
from pipeline.lora.targets import (
    Match,
    Wanted,
    match_modules,
    model_indexes,
    too_many_skipped,
    weighted_modules,
)

LoraUse = tuple[Adapter, float, float]
"""An adapter with its text-encoder weight and its UNet weight."""


def resolve_targets(
    adapter: Adapter, unet: nn.Module, text_encoder: nn.Module
) -> list[tuple[nn.Module, ModuleFactors]]:
    """Pair each of the adapter's modules with the model module it patches.

    A few modules the model lacks are skipped, as upload allowed; UserError when most of the
    file misses or a delta does not fit its weight, before anything is touched.
    """
    models = {"unet": weighted_modules(unet), "te": weighted_modules(text_encoder)}
    wanted = [
        Wanted(m.component, m.module, m.family, {p: tuple(t.shape) for p, t in m.parts.items()})
        for m in adapter.modules
    ]
    match = match_modules(wanted, model_indexes(unet, text_encoder))
    if match.misfit or too_many_skipped(len(match.missing), len(wanted)):
        raise UserError(_mismatch_message(wanted, match))
    return [
        (models[adapter.modules[position].component][path], adapter.modules[position])
        for position, path in match.paths.items()
    ]


def _mismatch_message(wanted: list[Wanted], match: Match) -> str:
    def names(positions: list[int]) -> str:
        return ", ".join(f"{wanted[p].component} {wanted[p].module}" for p in positions[:3])

    problems = []
    if match.missing:
        problems.append(f"{len(match.missing)} modules the model lacks ({names(match.missing)})")
    if match.misfit:
        problems.append(f"{len(match.misfit)} modules of another size ({names(match.misfit)})")
    return "this LoRA does not fit the loaded model: it has " + " and ".join(problems)


@contextmanager
def apply_loras(
    unet: nn.Module,
    text_encoder: nn.Module,
    loras: Sequence[LoraUse],
    stash: torch.device | None = None,
) -> Iterator[None]:
    """Patch `unet` and `text_encoder` with each (adapter, te_weight, unet_weight) for the body.

    The pristine copies live on `stash` (default: beside each weight). A full SD1.5 LoRA touches
    about 670 MiB of fp16 weights, a LoCon 1.6 GiB: `stash=torch.device("cpu")` keeps that off the
    GPU at the price of a host-to-device copy on restore.
    """
    plan: dict[nn.Module, list[tuple[ModuleFactors, float]]] = {}
    for adapter, te_weight, unet_weight in loras:
        weights = {"te": te_weight, "unet": unet_weight}
        for module, factors in resolve_targets(adapter, unet, text_encoder):
            if weights[factors.component]:
                plan.setdefault(module, []).append((factors, weights[factors.component]))
    pristine: dict[nn.Module, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for module, uses in plan.items():
                weight = _weight(module)
                pristine[module] = weight.detach().to(stash or weight.device, copy=True)
                weight.copy_(_patched(weight, uses))
        yield
    finally:
        with torch.no_grad():
            for module, weight in pristine.items():
                _weight(module).copy_(weight)


def _weight(module: nn.Module) -> torch.Tensor:
    """A patched module's weight (nn.Module types its attributes as tensor or module)."""
    return cast(torch.Tensor, module.weight)


def _patched(weight: torch.Tensor, uses: list[tuple[ModuleFactors, float]]) -> torch.Tensor:
    """weight + sum of scaled deltas, summed in float32 and rounded to the weight's dtype once."""
    total = weight.to(torch.float32, copy=True)
    for factors, scale in uses:
        parts = {name: t.to(weight.device) for name, t in factors.parts.items()}
        # Each DoRA delta is taken against the weight as patched so far, in prompt order, as A1111.
        delta = module_delta(factors.family, parts, weight.shape, weight=total)
        total.add_(delta, alpha=scale)
    return total.to(weight.dtype)
