"""Find the model module an adapter file means, however the trainer spelled its name.

Files name modules in four ways: kohya's flattened diffusers path (`down_blocks_0_..._to_q`, the
dots become underscores, so the reverse is looked up in a table of the model's own paths, never
guessed), the original LDM path of old kohya files (`input_blocks_4_1_...`), a dotted path (PEFT
and diffusers), and for the text encoder transformers 4's layout with its `text_model` level,
which sd-scripts writes whatever transformers the user has. transformers 5's `CLIPTextModel`
dropped that level, so each text path is known with and without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

TEXT_MODEL = "text_model."
"""The level transformers 4's CLIPTextModel has above `encoder` and that trainers keep writing."""

# The LDM ResBlock's sublayers -> diffusers' ResnetBlock2D names.
_LDM_RESNET = {
    "in_layers_0": "norm1",
    "in_layers_2": "conv1",
    "emb_layers_1": "time_emb_proj",
    "out_layers_0": "norm2",
    "out_layers_3": "conv2",
    "skip_connection": "conv_shortcut",
}
_LDM_TOP = {
    "time_embed_0": "time_embedding_linear_1",
    "time_embed_2": "time_embedding_linear_2",
    "input_blocks_0_0": "conv_in",
    "out_0": "conv_norm_out",
    "out_2": "conv_out",
}
_LDM_BLOCK = re.compile(r"(input_blocks|output_blocks)_(\d+)_(\d+)(?:_(.+))?$")
_LDM_MIDDLE = re.compile(r"middle_block_(\d+)(?:_(.+))?$")
LDM_PREFIXES = ("input_blocks_", "middle_block_", "output_blocks_", "time_embed_", "out_")


def flat_name(module: str) -> str:
    """The kohya spelling of a dotted module path."""
    return module.replace(".", "_")


def ldm_to_diffusers(module: str, layers_per_block: int) -> str | None:
    """The flattened diffusers path of a flattened LDM UNet path, or None if it names none.

    LDM numbers the UNet's blocks in one sequence per side: on the way down each level has
    `layers_per_block` (resnet, attention) pairs and then a downsampler; on the way up one pair
    more and the upsampler inside the level's last block.
    """
    if module in _LDM_TOP:
        return _LDM_TOP[module]
    if match := _LDM_MIDDLE.match(module):
        index, rest = int(match[1]), match[2] or ""
        where = {0: "resnets_0", 1: "attentions_0", 2: "resnets_1"}.get(index)
        return _join(f"mid_block_{where}", rest, resnet=index != 1) if where else None
    match = _LDM_BLOCK.match(module)
    if not match:
        return None
    side, block, layer, rest = match[1], int(match[2]), int(match[3]), match[4] or ""
    if side == "input_blocks":
        return _input_block(block, layer, rest, layers_per_block)
    return _output_block(block, layer, rest, layers_per_block + 1)


def _input_block(block: int, layer: int, rest: str, per_level: int) -> str | None:
    if block == 0:
        return None
    level, position = divmod(block - 1, per_level + 1)
    if position == per_level:  # the level's downsampler, `op` in LDM
        return f"down_blocks_{level}_downsamplers_0_conv" if (layer, rest) == (0, "op") else None
    kind = {0: "resnets", 1: "attentions"}.get(layer)
    if kind is None:
        return None
    return _join(f"down_blocks_{level}_{kind}_{position}", rest, resnet=layer == 0)


def _output_block(block: int, layer: int, rest: str, per_level: int) -> str | None:
    level, position = divmod(block, per_level)
    if layer == 0:
        return _join(f"up_blocks_{level}_resnets_{position}", rest, resnet=True)
    # The upsampler follows the attention when the level has one, else it is layer 1.
    if rest == "conv" and position == per_level - 1:
        return f"up_blocks_{level}_upsamplers_0_conv"
    if layer != 1:
        return None
    return _join(f"up_blocks_{level}_attentions_{position}", rest, resnet=False)


def _join(block: str, rest: str, resnet: bool) -> str | None:
    if not rest:
        return None
    if resnet:
        return f"{block}_{_LDM_RESNET[rest]}" if rest in _LDM_RESNET else None
    return f"{block}_{rest}"


@dataclass(frozen=True)
class ModuleIndex:
    """The weighted modules of one model part, found by any spelling a file may use."""

    shapes: Mapping[str, tuple[int, ...]]
    """Path -> weight shape of every module an adapter may patch."""
    by_flat: Mapping[str, str | None]
    """Flattened spelling -> path; None when two paths flatten alike (never in SD1.5)."""
    layers_per_block: int | None
    """The UNet's, for LDM names; None for the text encoder."""

    @classmethod
    def build(
        cls, shapes: Mapping[str, tuple[int, ...]], layers_per_block: int | None = None
    ) -> ModuleIndex:
        by_flat: dict[str, str | None] = {}
        for path in shapes:
            for spelling in _spellings(path, text=layers_per_block is None):
                flat = flat_name(spelling)
                by_flat[flat] = path if by_flat.get(flat, path) == path else None
        return cls(dict(shapes), by_flat, layers_per_block)

    def find(self, module: str) -> str | None:
        """The model path `module` names, or None when the model has no such module."""
        for spelling in self._candidates(module):
            if spelling in self.shapes:
                return spelling
            if found := self.by_flat.get(flat_name(spelling)):
                return found
        return None

    def _candidates(self, module: str) -> Iterator[str]:
        yield module
        if self.layers_per_block is not None and module.startswith(LDM_PREFIXES):
            mapped = ldm_to_diffusers(flat_name(module), self.layers_per_block)
            if mapped:
                yield mapped


def _spellings(path: str, text: bool) -> tuple[str, ...]:
    """A path as the model has it and, for the text encoder, with or without `text_model`."""
    if not text:
        return (path,)
    if path.startswith(TEXT_MODEL):
        return (path, path.removeprefix(TEXT_MODEL))
    return (path, TEXT_MODEL + path)
