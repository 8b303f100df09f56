"""Inspect a ControlNet file without a model: is it an SD1.5 ControlNet, in which layout.

Only the safetensors header is read (names, dtypes, shapes), so a 1.4 GB file is checked in
milliseconds and nothing in it is executed. Two layouts are recognised, as diffusers'
`convert_controlnet_checkpoint` accepts them:

- diffusers (`ControlNetModel`'s own names): `controlnet_cond_embedding.*` (the hint encoder),
  `down_blocks.*`, `mid_block.*`, the zero convolutions `controlnet_down_blocks.N` and
  `controlnet_mid_block`;
- original (the ControlNet 1.0/1.1 files, `control_v11p_sd15_canny`): LDM names under
  `control_model.` (or without that prefix, as `thibaud/controlnet-sd21` ships them):
  `input_hint_block.*`, `input_blocks.*`, `middle_block.*`, `zero_convs.N.0`, `middle_block_out.0`.

The base is read from the cross-attention width (`attn2.to_k` input: 768 for SD1.x, 1024 SD2.x,
2048 SDXL) and SDXL's extra embedding (`add_embedding` / `label_emb`), never from metadata.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.control.model_types import METADATA_KEYS
from pipeline.errors import UserError
from pipeline.lora.bases import BASE_NAMES, BASES_BY_WIDTH, FLOAT_DTYPES, SD1_WIDTH
from pipeline.lora.embeddings import find_vectors
from pipeline.lora.header import Header, TensorEntry, read_header
from pipeline.lora.hypernet_layout import looks_like_hypernetwork
from pipeline.lora.keys import parse_key

ORIGINAL_PREFIX = "control_model."
HINT_CHANNELS = 3
MAX_METADATA_CHARS = 200
EXAMPLE = "control_v11p_sd15_canny"
"""The SD1.5 ControlNet messages suggest: the most used one."""


@dataclass(frozen=True)
class Names:
    """How one layout spells the parts the inspection reads."""

    hint_in: str
    hint_out: str
    zero_conv: str
    """The name of zero convolution N's weight, as a `str.format` template."""
    mid_out: str
    sdxl: tuple[str, ...]

    def zero_conv_number(self, key: str) -> int | None:
        """N when `key` is zero convolution N's weight."""
        head, _, tail = self.zero_conv.partition("{}")
        number = key.removeprefix(head).removesuffix(tail)
        if key.startswith(head) and key.endswith(tail) and number.isdigit():
            return int(number)
        return None


DIFFUSERS = Names(
    hint_in="controlnet_cond_embedding.conv_in.weight",
    hint_out="controlnet_cond_embedding.conv_out.weight",
    zero_conv="controlnet_down_blocks.{}.weight",
    mid_out="controlnet_mid_block.weight",
    sdxl=("add_embedding.", "add_time_proj."),
)
ORIGINAL = Names(
    hint_in="input_hint_block.0.weight",
    hint_out="",  # the last even index of the Sequential: found by `_hint_out`
    zero_conv="zero_convs.{}.0.weight",
    mid_out="middle_block_out.0.weight",
    sdxl=("label_emb.",),
)
_ATTN2_KEY = re.compile(r"(^|\.)attn2\.to_k\.weight$")
_HINT_CONV = re.compile(r"input_hint_block\.(\d+)\.weight")
_T2I_ADAPTER = re.compile(r"^(adapter\.)?(body\.\d+\.|conv_in\.|ln_pre\.|style_embedding)")
_CHECKPOINT_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")


@dataclass(frozen=True)
class ControlInspection:
    """What a file is and whether the loaded model can use it as a ControlNet."""

    ok: bool
    reason: str | None
    size: int
    tensors: int
    layout: str | None = None
    """"original" or "diffusers"; None when the file is no ControlNet."""
    base: str = "unknown"
    hint_channels: int = 0
    """Channels of the map the hint encoder reads (3, RGB); 0 without a hint encoder."""
    has_hint: bool = False
    zero_convs: int = 0
    parameters: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The `dreamcord controlnet check --json` document."""
        return {
            "ok": self.ok,
            "reason": self.reason,
            "layout": self.layout,
            "base": self.base,
            "hint_channels": self.hint_channels,
            "has_hint": self.has_hint,
            "zero_convs": self.zero_convs,
            "parameters": self.parameters,
            "tensors": self.tensors,
            "size": self.size,
            "metadata": self.metadata,
        }


def inspect_controlnet(path: Path, model_width: int = SD1_WIDTH) -> ControlInspection:
    """Inspect `path` for a model whose cross-attention width is `model_width` (768: SD1.5)."""
    size = path.stat().st_size
    try:
        header = read_header(path)
    except UserError as error:
        return ControlInspection(False, str(error), size, 0)
    found = ControlInspection(
        False, None, size, len(header.tensors), metadata=_kept_metadata(header.metadata)
    )
    if reason := _not_a_controlnet(header):
        return replace(found, reason=reason)
    layout, names, tensors = _layout(header.tensors)
    base, widths = _base(tensors, names, model_width)
    found = replace(found, layout=layout, base=base)
    if reason := _base_problem(base, widths, model_width):
        return replace(found, reason=reason)
    hint = tensors.get(names.hint_in)
    zero_convs = sorted(n for key in tensors if (n := names.zero_conv_number(key)) is not None)
    reason = _structure_problem(tensors, names, zero_convs) or _dtype_problem(tensors)
    return replace(
        found,
        ok=reason is None,
        reason=reason,
        hint_channels=hint.shape[1] if hint is not None and len(hint.shape) == 4 else 0,
        has_hint=hint is not None,
        zero_convs=len(zero_convs),
        parameters=sum(math.prod(entry.shape) for entry in tensors.values()),
    )


def _not_a_controlnet(header: Header) -> str | None:
    """Why the file is something else (named, with where it belongs), or None."""
    keys = list(header.tensors)
    if not keys:
        return "it holds no tensors: not a ControlNet"
    if "lora_controlnet" in header.tensors:
        return (
            "it is a Control-LoRA (Stability's SDXL control-lora): Dreamcord runs SD1.5; use "
            f"an SD1.5 ControlNet such as {EXAMPLE}"
        )
    if any(key.startswith(_CHECKPOINT_PREFIXES) for key in keys) and not any(
        key.startswith(ORIGINAL_PREFIX) for key in keys
    ):
        return "it is a full model checkpoint, not a ControlNet: checkpoints go in MODELS_DIR"
    if looks_like_hypernetwork(header):
        return "it is a hypernetwork, not a ControlNet: add it with `hypernetwork add`"
    if find_vectors(header) is not None:
        return "it is a textual-inversion embedding, not a ControlNet: add it as an embedding"
    if any(parse_key(key) is not None for key in keys):
        return "it is a LoRA, not a ControlNet: add it with `lora add`"
    if is_controlnet(header.tensors):
        return None
    if any(key.startswith(("up_blocks.", "output_blocks.")) for key in keys):
        return "it is a UNet (it has output blocks), not a ControlNet"
    if sum(1 for key in keys if _T2I_ADAPTER.match(key)) > len(keys) // 2:
        return (
            "it is a T2I-Adapter, not a ControlNet: Dreamcord loads ControlNets only; use one "
            f"such as {EXAMPLE}"
        )
    shown = ", ".join(key[:80] for key in keys[:3])
    return (
        f"it is not a ControlNet: its tensor names ({shown}) are of no ControlNet layout "
        f"(a ControlNet has a hint encoder and zero convolutions, as {EXAMPLE} does)"
    )


def is_controlnet(tensors: Collection[str]) -> bool:
    """Whether the names are of either layout (its hint encoder or its zero convolutions): the
    other libraries send such a file here."""
    return any(
        key.removeprefix(ORIGINAL_PREFIX).startswith(
            (
                "controlnet_cond_embedding.",
                "controlnet_down_blocks.",
                "input_hint_block.",
                "zero_convs.",
            )
        )
        for key in tensors
    )


def _layout(tensors: Mapping[str, TensorEntry]) -> tuple[str, Names, dict[str, TensorEntry]]:
    """The file's layout, its names, and its tensors with the `control_model.` prefix removed.

    As diffusers' converter does, a file with prefixed names keeps only those.
    """
    if any(
        key.startswith(("controlnet_cond_embedding.", "controlnet_down_blocks.")) for key in tensors
    ):
        return "diffusers", DIFFUSERS, dict(tensors)
    if any(key.startswith(ORIGINAL_PREFIX) for key in tensors):
        stripped = {
            key.removeprefix(ORIGINAL_PREFIX): entry
            for key, entry in tensors.items()
            if key.startswith(ORIGINAL_PREFIX)
        }
        return "original", ORIGINAL, stripped
    return "original", ORIGINAL, dict(tensors)


def _base(
    tensors: Mapping[str, TensorEntry], names: Names, model_width: int
) -> tuple[str, set[int]]:
    """The base model named by SDXL's extra embedding or by the cross-attention widths (the
    loaded model's width counts as SD1.x, so the tiny model's files do)."""
    widths = {
        entry.shape[1]
        for key, entry in tensors.items()
        if _ATTN2_KEY.search(key) and len(entry.shape) == 2
    }
    if any(key.startswith(names.sdxl) for key in tensors):
        return "sdxl", widths
    if len(widths) != 1:
        return "unknown", widths
    (width,) = widths
    return "sd1" if width == model_width else BASES_BY_WIDTH.get(width, "unknown"), widths


def _base_problem(base: str, widths: set[int], model_width: int) -> str | None:
    if base in ("sd2", "sdxl"):
        return (
            f"it is an {BASE_NAMES[base]} ControlNet: Dreamcord runs SD1.5; use an SD1.5 "
            f"ControlNet such as {EXAMPLE}"
        )
    if not widths:
        return "it has no cross-attention layers (attn2.to_k): an incomplete ControlNet"
    if len(widths) > 1:
        return f"its layers disagree about the text width ({sorted(widths)})"
    (width,) = widths
    if width != model_width:
        made_for = f"SD1.x (text width {width})" if base == "sd1" else f"text width {width}"
        return f"it was made for {made_for}, the loaded model's text width is {model_width}"
    return None


def _structure_problem(
    tensors: Mapping[str, TensorEntry], names: Names, zero_convs: list[int]
) -> str | None:
    """What a loader would miss: the hint encoder, the zero convolutions, the middle output."""
    hint = tensors.get(names.hint_in)
    if hint is None or len(hint.shape) != 4:
        return (
            f"it has no hint encoder ({names.hint_in}): a ControlNet reads its control map "
            "through one, even a tile or shuffle one"
        )
    if hint.shape[1] != HINT_CHANNELS:
        return (
            f"its hint encoder reads {hint.shape[1]}-channel maps; control maps are RGB "
            f"({HINT_CHANNELS} channels), as every ControlNet 1.1 model reads them"
        )
    if not zero_convs or zero_convs != list(range(len(zero_convs))):
        return "its zero convolutions are missing or not numbered 0..n: the file is incomplete"
    if names.mid_out not in tensors:
        return f"it has no middle-block output ({names.mid_out}): the file is incomplete"
    hint_out = tensors.get(names.hint_out or _hint_out(tensors))
    first = tensors[names.zero_conv.format(0)]
    convs = [entry.shape for entry in (hint_out, first) if entry is not None]
    if len(convs) != 2 or any(len(shape) != 4 for shape in convs) or convs[0][0] != convs[1][1]:
        return "its hint encoder's output does not match the first block's channels"
    return None


def _hint_out(tensors: Mapping[str, TensorEntry]) -> str:
    """The last convolution of the original layout's `input_hint_block` Sequential."""
    indexes = [int(match[1]) for key in tensors if (match := _HINT_CONV.fullmatch(key))]
    return f"input_hint_block.{max(indexes)}.weight"


def _dtype_problem(tensors: Mapping[str, TensorEntry]) -> str | None:
    for key, entry in tensors.items():
        if entry.dtype not in FLOAT_DTYPES:
            return (
                f"tensor {key[:80]} holds {entry.dtype} values, a ControlNet's are floating point"
            )
    return None


def _kept_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The names a file gives itself, cut short: untrusted text, shown and used for its type."""
    return {key: metadata[key][:MAX_METADATA_CHARS] for key in METADATA_KEYS if key in metadata}
