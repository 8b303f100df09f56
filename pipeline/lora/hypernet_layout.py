"""Read a hypernetwork's layout from a safetensors header: widths, layers, options, or a refusal.

The agreed file form of A1111's `.pt` hypernetworks: tensors `{width}.{half}.linear.{i}.{param}`
(half 0 feeds the attention key, half 1 the value; `i` is the index in A1111's Sequential) and
the non-tensor fields as JSON strings in the metadata. The file is recognised by its tensor names;
the layers are read off the shapes, and only the options that leave no tensor (activation,
layer norm, dropout) come from the metadata, with the defaults A1111 uses when it loads a `.pt`.
Torch-free, so inspection and the library can call it anywhere.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from pipeline.lora.header import Header, TensorEntry
from pipeline.lora.untrusted_json import parse_json

FORMAT = "dreamcord-hypernetwork"
KEY = re.compile(r"(\d+)\.([01])\.linear(?:\.(\d+)|([12]))\.(weight|bias)")
"""`768.0.linear.0.weight`; A1111's first files wrote `linear1`/`linear2` for indices 0 and 1,
which its loader renames, and `dreamcord convert` keeps the names as the file has them."""
SD1_ATTENTION_WIDTHS = (320, 640, 768, 1280)
"""Inputs of SD1.5's attention key/value projections: the UNet's self-attention widths, and the
text width for cross-attention. A1111 applies a hypernetwork to `default(context, x)` in every
attention layer, so the self-attention widths count as much as 768."""
MAX_LAYERS = 16
MAX_FACTOR = 64
"""Beyond this a stated layer factor is nonsense; the shapes are then read as they are."""
FLOATS = ("F16", "BF16", "F32", "F64")
ACTIVATIONS = {
    "relu": "ReLU",
    "leakyrelu": "LeakyReLU",
    "elu": "ELU",
    "swish": "Hardswish",  # A1111's "swish" is torch's Hardswish, not SiLU
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "softsign": "Softsign",
    "mish": "Mish",
    "silu": "SiLU",
    "gelu": "GELU",
    "hardswish": "Hardswish",
    "hardsigmoid": "Hardsigmoid",
    "hardtanh": "Hardtanh",
    "relu6": "ReLU6",
    "selu": "SELU",
    "celu": "CELU",
    "softplus": "Softplus",
    "tanhshrink": "Tanhshrink",
    "logsigmoid": "LogSigmoid",
}
"""A1111's activation names (its own table plus torch's lower-cased class names) that take no
arguments, hold no parameters and keep the width: the ones a trained file can use here."""
NO_ACTIVATION = (None, "linear")


@dataclass(frozen=True)
class Layer:
    """One entry of A1111's Sequential: `kind` is linear, norm, activation or dropout."""

    kind: str
    index: int
    features: int = 0
    activation: str = ""


@dataclass(frozen=True)
class HypernetLayout:
    """What a checked hypernetwork file holds; `layers` is the same for every width, scaled."""

    widths: tuple[int, ...]
    structure: tuple[float, ...]
    activation: str | None
    layer_norm: bool
    activate_output: bool
    dropout: tuple[float, ...]
    name: str | None

    def layers(self, width: int) -> tuple[Layer, ...]:
        """A1111's module list for one width: Linear, then activation, norm and dropout."""
        return _layers(width, self.structure, self._options())

    def _options(self) -> _Options:
        return _Options(self.activation, self.layer_norm, self.activate_output, self.dropout)

    def as_json(self) -> dict[str, object]:
        return {
            "widths": list(self.widths),
            "layer_structure": list(self.structure),
            "activation": self.activation or "linear",
            "layer_norm": self.layer_norm,
            "name": self.name,
        }


@dataclass(frozen=True)
class _Options:
    activation: str | None
    layer_norm: bool
    activate_output: bool
    dropout: tuple[float, ...]


def parse_key(name: str) -> tuple[int, int, str] | None:
    """(width, half, `index.param`) of a tensor name, or None if it is not a hypernetwork's."""
    match = KEY.fullmatch(name)
    if match is None:
        return None
    index = int(match[3]) if match[3] is not None else int(match[4]) - 1
    return int(match[1]), int(match[2]), f"{index}.{match[5]}"


def looks_like_hypernetwork(header: Header) -> bool:
    """Every tensor is named as a hypernetwork's: then it is one, whatever else is wrong."""
    return bool(header.tensors) and all(parse_key(name) for name in header.tensors)


def read_layout(header: Header, model_widths: Collection[int]) -> HypernetLayout | str:
    """The layout of a file that `looks_like_hypernetwork`, or why the model cannot use it."""
    halves: dict[tuple[int, int], dict[str, TensorEntry]] = defaultdict(dict)
    for name, entry in header.tensors.items():
        parsed = parse_key(name)
        assert parsed is not None
        width, half, part = parsed
        if part in halves[width, half]:
            return f"it names the tensor {width}.{half}.linear.{part} twice (old and new names)"
        halves[width, half][part] = entry
    widths = sorted({width for width, _ in halves})
    if ints := [name for name, entry in header.tensors.items() if entry.dtype not in FLOATS]:
        return f"it has tensors that are not floating point: {', '.join(sorted(ints)[:3])}"
    if foreign := [width for width in widths if width not in model_widths]:
        readable = ", ".join(str(w) for w in sorted(model_widths))
        made_for = " (it was made for SD2.x)" if 1024 in foreign else ""
        return (
            f"it has MLPs for width {', '.join(map(str, foreign))}, which no attention layer "
            f"of the loaded model reads (those read {readable}){made_for}"
        )
    if missing := [f"{w}.{1 - h}" for w, h in sorted(halves) if (w, 1 - h) not in halves]:
        return f"it lacks the key or value half of some widths: {', '.join(missing[:3])}"
    linears = _linear_count(halves)
    if isinstance(linears, str):
        return linears
    options = _read_options(header.metadata, linears)
    if isinstance(options, str):
        return options
    structure = _structure(halves[widths[0], 0], widths[0], header.metadata)
    if isinstance(structure, str):
        return structure
    for width, half in sorted(halves):
        expected = _expected_shapes(width, _layers(width, structure, options))
        found = {part: entry.shape for part, entry in halves[width, half].items()}
        if found != expected:
            return _shape_problem(f"{width}.{half}", found, expected)
    label = _json_field(header.metadata, "name")
    return HypernetLayout(
        widths=tuple(widths),
        structure=structure,
        activation=options.activation,
        layer_norm=options.layer_norm,
        activate_output=options.activate_output,
        dropout=options.dropout,
        name=label if isinstance(label, str) else None,
    )


def _linear_count(halves: Mapping[tuple[int, int], dict[str, TensorEntry]]) -> int | str:
    """How many Linear layers each MLP has (2-D weights); all halves must agree."""
    counts = {
        sum(1 for part, e in parts.items() if part.endswith("weight") and len(e.shape) == 2)
        for parts in halves.values()
    }
    if len(counts) != 1:
        return f"its MLPs have different numbers of layers ({sorted(counts)})"
    (count,) = counts
    if not 1 <= count <= MAX_LAYERS:
        return f"its MLPs have {count} linear layers; 1 to {MAX_LAYERS} are supported"
    return count


def _read_options(metadata: Mapping[str, str], linears: int) -> _Options | str:
    """Activation, layer norm and dropout as A1111's loader reads them, with its defaults."""
    fields = {}
    for key in ("activation_func", "is_layer_norm", "activate_output", "use_dropout",
                "last_layer_dropout", "dropout_structure"):  # fmt: skip
        value = _json_field(metadata, key)
        if isinstance(value, _Bad):
            return f"its metadata field {key} is not JSON"
        fields[key] = value
    activation = fields["activation_func"]
    if not isinstance(activation, str | None) or (
        activation not in NO_ACTIVATION and activation not in ACTIVATIONS
    ):
        return f"it uses the activation {str(activation)[:40]!r}, which Dreamcord does not support"
    flags = {}
    for key, default in (("is_layer_norm", False), ("activate_output", True),
                         ("use_dropout", False), ("last_layer_dropout", False)):  # fmt: skip
        value = default if fields[key] is None else fields[key]
        if not isinstance(value, bool):
            return f"its metadata field {key} is not true or false"
        flags[key] = value
    dropout = fields["dropout_structure"]
    if dropout is None:
        dropout = _default_dropout(linears + 1, flags["use_dropout"], flags["last_layer_dropout"])
    if (
        not isinstance(dropout, list)
        or len(dropout) < linears + 1
        or not all(isinstance(p, int | float) and 0 <= p < 1 for p in dropout)
    ):
        return f"its dropout_structure does not fit {linears} layers of probabilities in [0, 1)"
    return _Options(
        activation if activation in ACTIVATIONS else None,
        flags["is_layer_norm"],
        flags["activate_output"],
        tuple(float(p) for p in dropout),
    )


def _default_dropout(length: int, use_dropout: bool, last_layer_dropout: bool) -> list[float]:
    """A1111's dropout structure for old files: 0.3 after the hidden layers when enabled."""
    if not use_dropout:
        return [0.0] * length
    return [0.0, *[0.3] * (length - 3), 0.3 if last_layer_dropout else 0.0, 0.0]


def _structure(
    parts: Mapping[str, TensorEntry], width: int, metadata: Mapping[str, str]
) -> tuple[float, ...] | str:
    """The layer structure ([1, 2, 1] ...) read off one MLP's Linear shapes, in layer order.

    The metadata's `layer_structure` is preferred when it gives these shapes: A1111 sizes a
    layer int(width * factor), so a factor like 1.3 cannot be read back exactly from one width.
    """
    linears = sorted(
        (int(part.split(".")[0]), entry.shape)
        for part, entry in parts.items()
        if part.endswith("weight") and len(entry.shape) == 2
    )
    if linears[0][1][1] != width or linears[-1][1][0] != width:
        return f"its MLPs for width {width} do not start and end at that width"
    for previous, current in itertools.pairwise(linears):
        if current[1][1] != previous[1][0]:
            return f"the layer shapes of its MLPs for width {width} do not chain"
    read = (1.0, *(out_features / width for _, (out_features, _) in linears))
    stated = _json_field(metadata, "layer_structure")
    if (
        isinstance(stated, list)
        and len(stated) == len(read)
        and all(isinstance(f, int | float) and 0 < f <= MAX_FACTOR
                and int(width * f) == int(width * r) for f, r in zip(stated, read, strict=True))
    ):  # fmt: skip
        return tuple(float(f) for f in stated)
    return read


def _layers(width: int, structure: tuple[float, ...], options: _Options) -> tuple[Layer, ...]:
    """A1111's HypernetworkModule recipe, as (kind, Sequential index) entries."""
    layers: list[Layer] = []
    last = len(structure) - 2
    for i in range(len(structure) - 1):
        features = int(width * structure[i + 1])
        layers.append(Layer("linear", len(layers), features))
        if options.activation is not None and (i < last or options.activate_output):
            layers.append(Layer("activation", len(layers), activation=options.activation))
        if options.layer_norm:
            layers.append(Layer("norm", len(layers), features))
        if options.dropout[i + 1] > 0:
            layers.append(Layer("dropout", len(layers)))
    return tuple(layers)


def _expected_shapes(width: int, layers: tuple[Layer, ...]) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes A1111's module for `width` would have."""
    shapes: dict[str, tuple[int, ...]] = {}
    features = width
    for layer in layers:
        if layer.kind == "linear":
            shapes[f"{layer.index}.weight"] = (layer.features, features)
            shapes[f"{layer.index}.bias"] = (layer.features,)
            features = layer.features
        elif layer.kind == "norm":
            shapes[f"{layer.index}.weight"] = (layer.features,)
            shapes[f"{layer.index}.bias"] = (layer.features,)
    return shapes


def _shape_problem(
    where: str, found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]
) -> str:
    if set(found) != set(expected):
        return (
            f"its tensors for {where} are {sorted(found)}, but its options (activation, layer "
            f"norm, dropout) make A1111 expect {sorted(expected)}"
        )
    wrong = next(part for part in sorted(found) if found[part] != expected[part])
    shapes = f"{list(found[wrong])}, not {list(expected[wrong])}"
    return f"its tensor {where}.linear.{wrong} has shape {shapes}"


class _Bad:
    """A metadata value that is not JSON."""


def _json_field(metadata: Mapping[str, str], key: str) -> object:
    if key not in metadata:
        return None
    try:
        return parse_json(metadata[key])
    except ValueError:
        return _Bad()
