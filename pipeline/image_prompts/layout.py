"""What an IP-Adapter file holds, read from its safetensors header alone (no torch).

h94/IP-Adapter ships the SD1.5 adapter as `image_proj.*` (a projection of the CLIP image
embedding to 4 tokens: `proj.weight`, `proj.bias`, `norm.*`) and `ip_adapter.N.to_k_ip.weight` /
`.to_v_ip.weight` for each cross-attention layer, N = 1, 3, 5, ... counting every attention
layer of the UNet in diffusers' order (the even numbers are the self-attention ones, which have
none). The "plus" files project through a resampler (`image_proj.latents`, `image_proj.layers.*`)
from the encoder's hidden states, the Face ID ones through other heads: those are refused here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.lora.header import Header, read_header

TOKENS = 4
"""Image tokens the base adapter adds to each cross-attention layer's context."""
_LAYER = re.compile(r"ip_adapter\.(\d+)\.(to_k_ip|to_v_ip)\.weight")
_PROJECTION = {"image_proj.proj.weight", "image_proj.proj.bias"}
_NORM = {"image_proj.norm.weight", "image_proj.norm.bias"}
_MODELS = {768: "SD1.5", 1024: "SD2", 2048: "SDXL"}


@dataclass(frozen=True)
class AdapterLayout:
    """A checked base IP-Adapter: its input and token widths and each layer's width."""

    embed_width: int
    """The CLIP image embedding width it projects (the encoder's projection_dim)."""
    context_width: int
    """The cross-attention context width (768 for SD1.5)."""
    layer_widths: tuple[int, ...]
    """The output width of each cross-attention layer's to_k_ip/to_v_ip, in file order."""
    parameters: int


def read_adapter_layout(path: Path) -> AdapterLayout:
    """The layout of the IP-Adapter at `path`, or a UserError saying what the file is instead."""
    return adapter_layout(read_header(path), path.name)


def adapter_layout(header: Header, name: str) -> AdapterLayout:
    """Check the tensors an h94 base IP-Adapter has, with consistent shapes."""
    tensors = header.tensors
    if "image_proj.latents" in tensors or any(k.startswith("image_proj.layers.") for k in tensors):
        raise UserError(
            f"{name} is an IP-Adapter Plus (a resampler over the encoder's hidden states), "
            "which Dreamcord does not run yet: use ip-adapter_sd15.safetensors or "
            "ip-adapter_sd15_light.safetensors"
        )
    if not set(tensors) >= _PROJECTION | _NORM:
        raise UserError(
            f"{name} is not an SD1.5 IP-Adapter: it lacks image_proj.proj and image_proj.norm "
            "(use ip-adapter_sd15.safetensors from h94/IP-Adapter; Face ID files are not supported)"
        )
    layers: dict[int, dict[str, tuple[int, ...]]] = {}
    for key, entry in tensors.items():
        if key in _PROJECTION | _NORM:
            continue
        found = _LAYER.fullmatch(key)
        if found is None:
            raise UserError(f"{name} is not an SD1.5 IP-Adapter: unexpected tensor {key!r}")
        layers.setdefault(int(found[1]), {})[found[2]] = entry.shape
    context = tensors["image_proj.norm.weight"].shape
    projection = tensors["image_proj.proj.weight"].shape
    if len(context) != 1 or len(projection) != 2 or projection[0] != TOKENS * context[0]:
        raise UserError(f"{name}: its image projection's shapes do not fit together: refused")
    width = context[0]
    numbers = sorted(layers)
    if numbers != list(range(1, 2 * len(numbers), 2)):
        raise UserError(f"{name}: its ip_adapter layers are not numbered 1, 3, 5, ...: refused")
    widths = []
    for number in numbers:
        pair = layers[number]
        shapes = {pair.get("to_k_ip"), pair.get("to_v_ip")}
        if len(shapes) != 1 or None in shapes:
            raise UserError(f"{name}: layer {number} lacks its to_k_ip or to_v_ip: refused")
        (shape,) = shapes
        assert shape is not None
        if len(shape) != 2 or shape[1] != width:
            raise UserError(f"{name}: layer {number} does not read {width}-wide tokens: refused")
        widths.append(shape[0])
    parameters = sum(math.prod(entry.shape) for entry in tensors.values())
    return AdapterLayout(projection[1], width, tuple(widths), parameters)


def check_fits(
    layout: AdapterLayout, name: str, context: int, layer_widths: Sequence[int], embed: int
) -> None:
    """Refuse an adapter that does not fit the UNet (its context width and cross-attention
    layers) or the encoder (its projection width)."""
    if layout.context_width != context:
        model = _MODELS.get(
            layout.context_width, f"a model of context width {layout.context_width}"
        )
        raise UserError(
            f"{name} is an IP-Adapter for {model}, and this model's context is {context} wide: "
            "use an SD1.5 IP-Adapter (ip-adapter_sd15.safetensors)"
        )
    if tuple(layer_widths) != layout.layer_widths:
        raise UserError(
            f"{name} has {len(layout.layer_widths)} cross-attention layers of widths "
            f"{list(layout.layer_widths)}; the model has {list(layer_widths)}: it is for "
            "another model"
        )
    if embed != layout.embed_width:
        raise UserError(
            f"IMAGE_ENCODER projects images to {embed} values but {name} reads "
            f"{layout.embed_width}: use the encoder the adapter was trained with "
            "(h94/IP-Adapter models/image_encoder for ip-adapter_sd15)"
        )
