"""A parsed adapter: the factor tensors of each module it touches, ready to become deltas.

Factors stay as the file stores them (often fp16, a few MB); dense deltas are built per batch by
the patcher, since a rank-32 LoRA's deltas would be hundreds of MB if kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from pipeline.errors import UserError
from pipeline.hashes import file_sha256
from pipeline.lora.header import read_header
from pipeline.lora.inspection import SD1_WIDTH, group_tensors, inspect_file


@dataclass(frozen=True)
class ModuleFactors:
    """One module's tensors: `module` is the name as the file spells it (kohya or PEFT)."""

    component: str
    module: str
    family: str
    parts: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Adapter:
    """A checked LoRA/LoCon/LoHa/LoKr/DoRA file, identified by the sha256 of its bytes."""

    sha256: str
    kind: str
    modules: tuple[ModuleFactors, ...]
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    """Bundled embeddings, token -> float32 (count, width): usable while the LoRA is active."""

    @property
    def nbytes(self) -> int:
        factors = sum(t.nbytes for m in self.modules for t in m.parts.values())
        return factors + sum(t.nbytes for t in self.embeddings.values())


def load_adapter(path: Path, model_width: int = SD1_WIDTH, sha256: str | None = None) -> Adapter:
    """Inspect, then load the factors of `path`; UserError with the inspection's reason if refused.

    `sha256` may be passed by a caller that already hashed the file (the library does at upload).
    """
    inspection = inspect_file(path, model_width)
    if not inspection.ok:
        raise UserError(f"{path.name} cannot be used: {inspection.reason}")
    if inspection.kind == "embedding":
        raise UserError(f"{path.name} is a textual-inversion embedding, not a LoRA")
    if inspection.kind == "hypernetwork":
        raise UserError(f"{path.name} is a hypernetwork, not a LoRA: use <hypernet:name>")
    groups, _, bundles = group_tensors(read_header(path))
    with safe_open(str(path), framework="pt") as file:
        modules = tuple(
            ModuleFactors(
                group.component,
                group.module,
                group.family,
                {part: file.get_tensor(key) for part, key in group.keys.items()},
            )
            for group in groups
        )
        embeddings = {
            token: file.get_tensor(key).to(torch.float32).reshape(-1, model_width)
            for token, (key, _) in bundles.items()
        }
    return Adapter(
        sha256=sha256 or file_sha256(path),
        kind=str(inspection.kind),
        modules=modules,
        embeddings=embeddings,
    )
