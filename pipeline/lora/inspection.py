"""Inspect an adapter or embedding file without a model: what it is, for which base, and whether
Dreamcord can use it. Nothing in the file is executed or unpickled; the base is read from tensor
shapes, never from metadata, which is free text anyone can write.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.control.inspection import is_controlnet
from pipeline.errors import UserError
from pipeline.lora.bases import BASE_NAMES, BASES_BY_WIDTH, FLOAT_DTYPES, SD1_WIDTH
from pipeline.lora.embeddings import SDXL_KEYS, embedding_problem, find_vectors, vector_count
from pipeline.lora.header import Header, TensorEntry, read_header
from pipeline.lora.hypernet_layout import (
    SD1_ATTENTION_WIDTHS,
    HypernetLayout,
    looks_like_hypernetwork,
    read_layout,
)
from pipeline.lora.keys import BUNDLE_PREFIX, COMPONENTS, parse_key
from pipeline.lora.names import flat_name
from pipeline.lora.targets import Wanted, match_modules, reference_indexes, too_many_skipped
from pipeline.lora.untrusted_json import parse_json

KEPT_METADATA = (
    "ss_output_name",
    "ss_base_model_version",
    "ss_network_module",
    "ss_network_dim",
    "ss_network_alpha",
    "ss_sd_model_name",
    "modelspec.title",
    "modelspec.architecture",
)
MAX_METADATA_CHARS = 200
MAX_TRIGGERS = 20
MAX_FACTOR_MAGNITUDE = 1e3
"""Trained factors are far below 1; values past this are a broken or hostile file."""
BUNDLE_VECTOR_PARTS = ("string_to_param.*", "emb_params")
"""How kohya and LyCORIS spell a bundled embedding's vectors after `bundle_emb.<token>.`."""
# Module name endings whose input width is the text width: the text encoder's attention and the
# UNet's cross-attention keys/values (the only UNet layers that read the text).
_WIDTH_PROBES = {
    "te": ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj"),
    "unet": ("attn2_to_k", "attn2_to_v"),
}
# Part names as a user sees them in the file, for messages about incomplete modules.
_FILE_PART = {"lora": "lora_{}", "peft": "lora_{}", "loha": "hada_{}", "lokr": "lokr_{}"}
_PEFT_PART = {"down": "A", "up": "B"}
# Per family, the pieces a module needs; a piece is present when one of its alternatives is whole.
_REQUIRED: dict[str, tuple[tuple[tuple[str, ...], ...], ...]] = {
    "lora": ((("down",),), (("up",),)),
    "peft": ((("down",),), (("up",),)),
    "loha": ((("w1_a",),), (("w1_b",),), (("w2_a",),), (("w2_b",),)),
    "lokr": ((("w1",), ("w1_a", "w1_b")), (("w2",), ("w2_a", "w2_b"))),
}


@dataclass(frozen=True)
class Inspection:
    """What a file is and whether the loaded model can use it; `reason` says why not."""

    ok: bool
    kind: str | None
    base: str
    rank: int | None
    alpha: float | None
    modules: int
    size: int
    tensors: int
    triggers: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    vectors: int = 0
    skipped: int = 0
    """Tensor keys that match no module of the model and are left out when patching."""
    embeddings: tuple[str, ...] = ()
    """Tokens of the embeddings a LoRA bundles."""
    dora: bool = False
    """Whether its modules carry DoRA magnitudes (`dora_scale`)."""
    hypernet: HypernetLayout | None = None

    def as_json(self) -> dict[str, Any]:
        """The `dreamcord lora check --json` document."""
        return {
            "ok": self.ok,
            "kind": self.kind,
            "base": self.base,
            "rank": self.rank,
            "alpha": self.alpha,
            "modules": self.modules,
            "vectors": self.vectors,
            "skipped": self.skipped,
            "embeddings": list(self.embeddings),
            "dora": self.dora,
            "tensors": self.tensors,
            "size": self.size,
            "triggers": list(self.triggers),
            "metadata": self.metadata,
            "reason": self.reason,
            **({"hypernetwork": self.hypernet.as_json()} if self.hypernet else {}),
        }


@dataclass(frozen=True)
class ModuleGroup:
    """The tensors of one adapted module, by part name."""

    component: str
    module: str
    family: str
    parts: dict[str, TensorEntry]
    keys: dict[str, str]
    """Part name -> tensor name in the file."""


def inspect_file(
    path: Path, model_width: int = SD1_WIDTH, attention_widths: Collection[int] | None = None
) -> Inspection:
    """Inspect `path` for a model whose text width is `model_width` (768 for SD1.5).

    `attention_widths` are the inputs of the model's attention key/value projections, which a
    hypernetwork's widths must be among (default: SD1.5's, or the text width of another model).
    """
    size = path.stat().st_size
    try:
        header = read_header(path)
    except UserError as error:
        return Inspection(False, None, "unknown", None, None, 0, size, 0, reason=str(error))
    base_fields: dict[str, Any] = {
        "size": size,
        "tensors": len(header.tensors),
        "triggers": trigger_words(header.metadata),
        "metadata": kept_metadata(header.metadata),
    }
    if set(header.tensors) == SDXL_KEYS:
        return Inspection(
            False, "embedding", "sdxl", None, None, 0, **base_fields,
            reason="it is an SDXL embedding (clip_l + clip_g); this server runs SD1.5",
        )  # fmt: skip
    if looks_like_hypernetwork(header):
        if attention_widths is None:
            attention_widths = SD1_ATTENTION_WIDTHS if model_width == SD1_WIDTH else (model_width,)
        return _inspect_hypernetwork(path, header, model_width, attention_widths, base_fields)
    found = find_vectors(header)
    if found is not None:
        return _inspect_embedding(path, found, model_width, base_fields)
    if is_controlnet(header.tensors):
        return Inspection(
            False, "controlnet", "unknown", None, None, 0, **base_fields,
            reason="it is a ControlNet: add it with `controlnet add`",
        )  # fmt: skip
    return _inspect_adapter(path, header, model_width, base_fields)


def _inspect_embedding(
    path: Path, found: tuple[str, TensorEntry], model_width: int, base_fields: dict[str, Any]
) -> Inspection:
    _, entry = found
    width = entry.shape[-1]
    base = "sd1" if width == model_width else BASES_BY_WIDTH.get(width, "unknown")
    reason = embedding_problem(entry, model_width) or _non_finite(path)
    return Inspection(
        reason is None, "embedding", base, None, None, 0, **base_fields,
        reason=reason, vectors=vector_count(entry),
    )  # fmt: skip


def _inspect_hypernetwork(
    path: Path,
    header: Header,
    model_width: int,
    attention_widths: Collection[int],
    base_fields: dict[str, Any],
) -> Inspection:
    layout = read_layout(header, attention_widths)
    if isinstance(layout, str):
        base = "sd2" if any(key.startswith("1024.") for key in header.tensors) else "unknown"
        return Inspection(
            False, "hypernetwork", base, None, None, 0, **base_fields, reason=layout
        )  # fmt: skip
    base = "sd1" if model_width in layout.widths else "unknown"
    reason = _value_problem(path)
    return Inspection(
        reason is None, "hypernetwork", base, None, None, len(layout.widths), **base_fields,
        reason=reason, hypernet=layout,
    )  # fmt: skip


def _inspect_adapter(
    path: Path, header: Header, model_width: int, base_fields: dict[str, Any]
) -> Inspection:
    groups, unknown, bundles = group_tensors(header)
    if not groups and not unknown and not bundles:
        return _refused(base_fields, "it holds no tensors")
    if not groups:
        return _refused(base_fields, _unknown_reason(unknown or list(bundles)))
    problems = [p for group in groups if (p := _incomplete(group) or _malformed(group))]
    if problems:
        return _refused(base_fields, _listed("malformed modules", problems))
    components = {group.component for group in groups}
    widths, shape_problems = _widths(groups)
    if shape_problems:
        return _refused(
            base_fields, _listed("factor shapes that do not fit together", shape_problems)
        )
    kind = _kind(groups)
    base = _base(components, widths, model_width)
    rank = max((r for g in groups if (r := _rank(g)) is not None), default=None)
    reason = _base_problem(base, widths, model_width) or _bundle_problem(bundles, model_width)
    skipped, match_problem = (0, None) if reason else _skipped_keys(groups, unknown, model_width)
    reason = reason or match_problem or _value_problem(path)
    return Inspection(
        ok=reason is None,
        alpha=None if reason else _common_alpha(path, header),
        reason=reason,
        kind=kind,
        base=base,
        rank=rank,
        modules=len(groups),
        skipped=skipped,
        embeddings=tuple(bundles),
        dora=any("dora_scale" in group.parts for group in groups),
        **base_fields,
    )


def group_tensors(
    header: Header,
) -> tuple[list[ModuleGroup], list[str], dict[str, tuple[str, TensorEntry]]]:
    """Group tensor entries by module.

    Also returns the names that fit no known layout, and the bundled embeddings
    (token -> (tensor name, entry)).
    """
    parts: dict[tuple[str, str], dict[str, TensorEntry]] = defaultdict(dict)
    keys: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    families: dict[tuple[str, str], set[str]] = defaultdict(set)
    unknown: list[str] = []
    bundles: dict[str, tuple[str, TensorEntry]] = {}
    # SD1 trainers that write `lora_te1_` mean the one text encoder; with a te2 it is SDXL.
    second_text = ("lora_te2_", "text_encoder_2.")
    single_text = not any(key.startswith(second_text) for key in header.tensors)
    for key, entry in header.tensors.items():
        if key.startswith(BUNDLE_PREFIX):
            token, _, vectors = key.removeprefix(BUNDLE_PREFIX).partition(".")
            if token and vectors in BUNDLE_VECTOR_PARTS and token not in bundles:
                bundles[token] = (key, entry)
            else:
                unknown.append(key)
            continue
        parsed = parse_key(key)
        if parsed is None:
            unknown.append(key)
            continue
        component = "te" if parsed.component == "te1" and single_text else parsed.component
        where = (component, parsed.module)
        parts[where][parsed.part] = entry
        keys[where][parsed.part] = key
        if parsed.family:
            families[where].add(parsed.family)
    groups = []
    for where, found in parts.items():
        family = families[where]
        if len(family) != 1:
            # No family: an alpha alone; several: halves of different formats on one module.
            unknown.extend(keys[where].values())
            continue
        groups.append(ModuleGroup(where[0], where[1], family.pop(), found, keys[where]))
    return groups, unknown, bundles


def wanted_modules(groups: list[ModuleGroup]) -> list[Wanted]:
    """The groups as the module matcher takes them."""
    return [
        Wanted(g.component, g.module, g.family, {p: e.shape for p, e in g.parts.items()})
        for g in groups
    ]


def _skipped_keys(
    groups: list[ModuleGroup], unknown: list[str], model_width: int
) -> tuple[int, str | None]:
    """How many keys patching will leave out, or why the file does not fit the model at all.

    Matching uses the model's architecture built from names and shapes alone; a width without a
    known architecture is matched at patch time only.
    """
    indexes = reference_indexes(model_width)
    if indexes is None:
        return len(unknown), None
    match = match_modules(wanted_modules(groups), indexes)
    if match.misfit:
        misfit = [f"{groups[p].component} {groups[p].module}" for p in match.misfit]
        return 0, _listed("modules of another size than the model's", misfit)
    missing = [key for p in match.missing for key in groups[p].keys.values()]
    skipped = unknown + missing
    total = skipped + [key for p in match.paths for key in groups[p].keys.values()]
    if too_many_skipped(len(skipped), len(total)):
        names = [f"{groups[p].component} {groups[p].module}" for p in match.missing] + unknown
        return len(skipped), _listed(
            f"{len(skipped)} of {len(total)} tensor names that match no module of the model "
            "(is it for another model?)",
            names,
        )
    return len(skipped), None


def _unknown_reason(unknown: list[str]) -> str:
    return _listed(
        "tensor names of no known layout (not a LoRA, LoCon, LoHa, LoKr or embedding)", unknown
    )


def _listed(what: str, items: list[str], shown: int = 3) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return f"it has {what}: {', '.join(items[:shown])}{more}"


def _incomplete(group: ModuleGroup) -> str | None:
    """Which required parts a module lacks (a `lora_down` without its `lora_up`, say)."""
    present = set(group.parts)
    pieces = list(_REQUIRED[group.family])
    if group.family == "loha" and present & {"t1", "t2"}:
        pieces += [(("t1",),), (("t2",),)]  # Tucker cores come in pairs
    missing = [
        " or ".join("+".join(_file_part(group.family, p) for p in alt) for alt in piece)
        for piece in pieces
        if not any(set(alt) <= present for alt in piece)
    ]
    if not missing:
        return None
    has = ", ".join(_file_part(group.family, p) for p in sorted(present - {"alpha"}))
    return f"{group.component} {group.module} has {has} but lacks {', '.join(missing)}"


def _malformed(group: ModuleGroup) -> str | None:
    """Values no trainer writes: an empty factor, a non-scalar alpha, integer factors."""
    name = f"{group.component} {group.module}"
    for part, entry in group.parts.items():
        key = group.keys[part]
        if part == "alpha":
            if math.prod(entry.shape) != 1:
                return f"{key} is not one number (shape {list(entry.shape)})"
        elif entry.dtype not in FLOAT_DTYPES:
            return f"{key} holds {entry.dtype} values, factors are floating point"
        elif 0 in entry.shape:
            return f"{name} has an empty factor {key} (shape {list(entry.shape)})"
    return None


def _bundle_problem(bundles: dict[str, tuple[str, TensorEntry]], model_width: int) -> str | None:
    for token, (key, entry) in bundles.items():
        if problem := embedding_problem(entry, model_width):
            return f"its bundled embedding {token} ({key}) is unusable: {problem}"
    return None


def _file_part(family: str, part: str) -> str:
    if family == "peft":
        part = _PEFT_PART.get(part, part)
    return _FILE_PART[family].format(part)


def _widths(groups: list[ModuleGroup]) -> tuple[set[int], list[str]]:
    """Text widths the file was trained against, read off the input size of probe modules."""
    from pipeline.lora.deltas import delta_shape

    widths: set[int] = set()
    problems = []
    for group in groups:
        try:
            shape = delta_shape(group.family, {p: e.shape for p, e in group.parts.items()})
        except ValueError:
            problems.append(f"{group.component} {group.module}")
            continue
        if flat_name(group.module).endswith(_WIDTH_PROBES.get(group.component, ())):
            widths.add(shape[1])
    return widths, problems


def _kind(groups: list[ModuleGroup]) -> str:
    """The file's kind for people: its most specific family (files may mix, per module)."""
    families = {group.family for group in groups}
    for family in ("lokr", "loha"):
        if family in families:
            return family
    # 1x1 convs (proj_in/proj_out) appear in plain LoRAs too; a wider kernel means LoCon.
    conv = any("mid" in g.parts or g.parts["down"].shape[2:] not in ((), (1, 1)) for g in groups)
    return "locon" if conv else "lora"


def _rank(group: ModuleGroup) -> int | None:
    for part in ("down", "w1_b", "w2_b"):
        if part in group.parts:
            return group.parts[part].shape[0]
    return None  # a LoKr module with both sides whole has no rank


def _base(components: set[str], widths: set[int], model_width: int) -> str:
    if components - set(COMPONENTS):
        return "sdxl"
    if len(widths) != 1:
        return "unknown"
    (width,) = widths
    return "sd1" if width == model_width else BASES_BY_WIDTH.get(width, "unknown")


def _base_problem(base: str, widths: set[int], model_width: int) -> str | None:
    if base in ("sd2", "sdxl"):
        return f"it was made for {BASE_NAMES[base]}; this server runs SD1.5"
    if len(widths) > 1:
        return f"its layers disagree about the text width ({sorted(widths)})"
    if widths and widths != {model_width}:
        (width,) = widths
        made_for = (
            f"{BASE_NAMES[base]} (text width {width})"
            if base != "unknown"
            else (f"a model of text width {width}")
        )
        return f"it was made for {made_for}, the loaded model's text width is {model_width}"
    return None


def _non_finite(path: Path) -> str | None:
    """Read every tensor (after the header checks) and report the first NaN or Inf."""
    return _value_problem(path, max_magnitude=None)


def _value_problem(path: Path, max_magnitude: float | None = MAX_FACTOR_MAGNITUDE) -> str | None:
    """Read every tensor (after the header checks): the first NaN, Inf or absurd value."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        for key in file.keys():  # noqa: SIM118 - safe_open is not a mapping
            tensor = file.get_tensor(key)
            if not tensor.is_floating_point() or tensor.numel() == 0:
                continue
            values = tensor.float()
            if not torch.isfinite(values).all():
                return f"tensor {key} holds NaN or infinite values: the file is broken"
            scalar = key.endswith(".alpha")
            if max_magnitude and not scalar and values.abs().max() > max_magnitude:
                return (
                    f"tensor {key} holds values up to {values.abs().max():.3g}, far past what "
                    "training makes: the file is broken"
                )
    return None


def _common_alpha(path: Path, header: Header) -> float | None:
    """The most common alpha value, the one a person would quote for the file."""
    from safetensors import safe_open

    keys = [key for key in header.tensors if key.endswith(".alpha")]
    if not keys:
        return None
    with safe_open(str(path), framework="pt") as file:
        values = Counter(round(float(file.get_tensor(key)), 6) for key in keys)
    return values.most_common(1)[0][0]


def _refused(base_fields: dict[str, Any], reason: str) -> Inspection:
    return Inspection(False, None, "unknown", None, None, 0, **base_fields, reason=reason)


def trigger_words(metadata: dict[str, str]) -> tuple[str, ...]:
    """Training tags, most frequent first, from kohya's `ss_tag_frequency` (dataset -> counts)."""
    try:
        datasets = parse_json(metadata.get("ss_tag_frequency", "{}"))
    except ValueError:
        return ()
    counts: Counter[str] = Counter()
    if isinstance(datasets, dict):
        for tags in datasets.values():
            if isinstance(tags, dict):
                counts.update(
                    {str(t).strip(): n for t, n in tags.items() if isinstance(n, int) and n > 0}
                )
    ranked = sorted((tag for tag in counts if tag), key=lambda tag: (-counts[tag], tag))
    return tuple(ranked[:MAX_TRIGGERS])


def kept_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """The few metadata fields worth showing, each cut short: they are untrusted text."""
    return {k: metadata[k][:MAX_METADATA_CHARS] for k in KEPT_METADATA if k in metadata}
