"""SD1.5 adapter files written the way trainers write them, from the documented architecture.

Nothing here looks at a loaded model. Module names and weight shapes come from the SD1.5 layout
(UNet blocks 320/640/1280/1280, two layers per block, cross-attention 768, 1x1-conv `proj_in` and
`proj_out`; CLIP ViT-L/14 text encoder of 12 layers, width 768, MLP 3072), spelled as the tools
that make real files spell them:

- kohya sd-scripts `networks/lora.py` walks `Transformer2DModel` children (and, for LoCon, those
  of `ResnetBlock2D`, `Downsample2D`, `Upsample2D`) and names each Linear/Conv2d
  `lora_unet_` + its diffusers path with `.` -> `_`; text-encoder modules (children of
  `CLIPAttention`, `CLIPMLP`) get `lora_te_` + their transformers 4 path, which starts with
  `text_model.` whatever transformers the user runs. Some SD1 trainers write `lora_te1_`.
- Older kohya files name UNet modules by the original (LDM) layout, `input_blocks_4_1_...`; the
  LDM <-> diffusers block table below follows diffusers' `convert_from_ckpt` and sd-scripts'
  `tools/convert_diffusers20_original_sd.py`.
- diffusers/PEFT writes `unet.<path>.lora_A.weight` / `lora_B.weight` and `text_encoder.<path>`,
  where <path> has `text_model.` (transformers 4) or not (transformers 5).
- LyCORIS writes LoHa (`hada_*`), LoKr (`lokr_*`) and DoRA (`dora_scale`) under the kohya names;
  its factor layouts are those of `lycoris/modules/{loha,lokr,locon}.py`.

Tests use these tables as the outside world; the model under test must find its own modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

Tensors = dict[str, torch.Tensor]
Shape = tuple[int, ...]

TEXT_WIDTH = 768
TEXT_LAYERS = 12
TEXT_MLP = 3072
CROSS_ATTENTION = 768
CHANNELS = (320, 640, 1280, 1280)
TIME_EMBEDDING = 1280
"""4 x 320: the width `time_emb_proj` of every resnet reads."""
LAYERS_PER_BLOCK = 2
ATTENTION_DOWN_BLOCKS = (0, 1, 2)
ATTENTION_UP_BLOCKS = (1, 2, 3)


@dataclass(frozen=True)
class Target:
    """One adapted layer: its component ("unet"/"te"), its path as its trainer knows it, its weight.

    Text-encoder paths are transformers 4's (`text_model.encoder.layers.0.self_attn.q_proj`),
    UNet paths diffusers' (`down_blocks.0.attentions.0.proj_in`).
    """

    component: str
    path: str
    shape: Shape

    @property
    def is_conv(self) -> bool:
        return len(self.shape) == 4


# --- the table ------------------------------------------------------------------------------


def text_encoder_targets() -> list[Target]:
    """The 72 layers kohya trains in CLIP ViT-L/14: 4 attention projections, 2 MLP layers, x 12."""
    targets = []
    for layer in range(TEXT_LAYERS):
        base = f"text_model.encoder.layers.{layer}"
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            targets.append(Target("te", f"{base}.self_attn.{projection}", (TEXT_WIDTH, TEXT_WIDTH)))
        targets.append(Target("te", f"{base}.mlp.fc1", (TEXT_MLP, TEXT_WIDTH)))
        targets.append(Target("te", f"{base}.mlp.fc2", (TEXT_WIDTH, TEXT_MLP)))
    return targets


def transformer_locations() -> list[tuple[str, int]]:
    """(diffusers path, channels) of the 16 `Transformer2DModel`s of the SD1.5 UNet."""
    places = [
        (f"down_blocks.{block}.attentions.{index}", CHANNELS[block])
        for block in ATTENTION_DOWN_BLOCKS
        for index in range(LAYERS_PER_BLOCK)
    ]
    places.append(("mid_block.attentions.0", CHANNELS[-1]))
    reversed_channels = CHANNELS[::-1]
    places += [
        (f"up_blocks.{block}.attentions.{index}", reversed_channels[block])
        for block in ATTENTION_UP_BLOCKS
        for index in range(LAYERS_PER_BLOCK + 1)
    ]
    return places


def transformer_layers(channels: int) -> list[tuple[str, Shape]]:
    """The Linear/Conv2d children of one SD1.5 `Transformer2DModel` (one transformer block).

    SD1.5 has `use_linear_projection: false`, so `proj_in`/`proj_out` are 1x1 convolutions, and
    its feed-forward is GEGLU: `ff.net.0.proj` maps c -> 2 x 4c, `ff.net.2` maps 4c -> c.
    """
    c = channels
    block = "transformer_blocks.0"
    layers: list[tuple[str, Shape]] = [("proj_in", (c, c, 1, 1))]
    for attention, context in (("attn1", c), ("attn2", CROSS_ATTENTION)):
        layers += [
            (f"{block}.{attention}.to_q", (c, c)),
            (f"{block}.{attention}.to_k", (c, context)),
            (f"{block}.{attention}.to_v", (c, context)),
            (f"{block}.{attention}.to_out.0", (c, c)),
        ]
    layers += [(f"{block}.ff.net.0.proj", (8 * c, c)), (f"{block}.ff.net.2", (c, 4 * c))]
    layers.append(("proj_out", (c, c, 1, 1)))
    return layers


def unet_attention_targets() -> list[Target]:
    """What a plain kohya LoRA trains in the UNet: 12 layers in each of 16 transformers (192)."""
    return [
        Target("unet", f"{place}.{name}", shape)
        for place, channels in transformer_locations()
        for name, shape in transformer_layers(channels)
    ]


def _resnet(place: str, in_channels: int, out_channels: int) -> list[Target]:
    layers = [
        Target("unet", f"{place}.conv1", (out_channels, in_channels, 3, 3)),
        Target("unet", f"{place}.time_emb_proj", (out_channels, TIME_EMBEDDING)),
        Target("unet", f"{place}.conv2", (out_channels, out_channels, 3, 3)),
    ]
    if in_channels != out_channels:
        layers.append(Target("unet", f"{place}.conv_shortcut", (out_channels, in_channels, 1, 1)))
    return layers


def unet_conv_targets() -> list[Target]:
    """What LoCon adds: the layers of every `ResnetBlock2D`, `Downsample2D` and `Upsample2D`."""
    targets: list[Target] = []
    previous = CHANNELS[0]  # conv_in's output
    for block, channels in enumerate(CHANNELS):
        for index in range(LAYERS_PER_BLOCK):
            place = f"down_blocks.{block}.resnets.{index}"
            targets += _resnet(place, previous if index == 0 else channels, channels)
        if block < len(CHANNELS) - 1:
            targets.append(
                Target(
                    "unet", f"down_blocks.{block}.downsamplers.0.conv", (channels, channels, 3, 3)
                )
            )
        previous = channels
    for index in range(2):
        targets += _resnet(f"mid_block.resnets.{index}", CHANNELS[-1], CHANNELS[-1])
    reversed_channels = CHANNELS[::-1]
    previous = reversed_channels[0]
    for block, channels in enumerate(reversed_channels):
        skip_from = reversed_channels[min(block + 1, len(CHANNELS) - 1)]
        for index in range(LAYERS_PER_BLOCK + 1):
            skip = skip_from if index == LAYERS_PER_BLOCK else channels
            resnet_in = previous if index == 0 else channels
            targets += _resnet(f"up_blocks.{block}.resnets.{index}", resnet_in + skip, channels)
        if block < len(CHANNELS) - 1:
            targets.append(
                Target("unet", f"up_blocks.{block}.upsamplers.0.conv", (channels, channels, 3, 3))
            )
        previous = channels
    return targets


# --- the LDM (original SD) layout -----------------------------------------------------------

RESNET_LAYERS_LDM = {
    "conv1": "in_layers.2",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
    "time_emb_proj": "emb_layers.1",
}


def ldm_block_table() -> dict[str, str]:
    """diffusers block path -> LDM block path, as diffusers' `convert_from_ckpt` lays them out."""
    table: dict[str, str] = {}
    for block in range(len(CHANNELS)):
        for index in range(LAYERS_PER_BLOCK):
            ldm = f"input_blocks.{3 * block + index + 1}"
            table[f"down_blocks.{block}.resnets.{index}"] = f"{ldm}.0"
            if block in ATTENTION_DOWN_BLOCKS:
                table[f"down_blocks.{block}.attentions.{index}"] = f"{ldm}.1"
        if block < len(CHANNELS) - 1:
            table[f"down_blocks.{block}.downsamplers.0.conv"] = (
                f"input_blocks.{3 * (block + 1)}.0.op"
            )
    table["mid_block.resnets.0"] = "middle_block.0"
    table["mid_block.attentions.0"] = "middle_block.1"
    table["mid_block.resnets.1"] = "middle_block.2"
    for block in range(len(CHANNELS)):
        for index in range(LAYERS_PER_BLOCK + 1):
            ldm = f"output_blocks.{3 * block + index}"
            table[f"up_blocks.{block}.resnets.{index}"] = f"{ldm}.0"
            if block in ATTENTION_UP_BLOCKS:
                table[f"up_blocks.{block}.attentions.{index}"] = f"{ldm}.1"
        if block < len(CHANNELS) - 1:
            # The upsampler follows the resnet, and the attention when the block has one.
            table[f"up_blocks.{block}.upsamplers.0.conv"] = (
                f"output_blocks.{3 * block + 2}.{2 if block in ATTENTION_UP_BLOCKS else 1}.conv"
            )
    return table


def ldm_path(diffusers_path: str) -> str:
    """The LDM path of a UNet layer given by its diffusers path."""
    table = ldm_block_table()
    for block, ldm in sorted(table.items(), key=lambda item: -len(item[0])):
        if diffusers_path == block:
            return ldm
        if diffusers_path.startswith(block + "."):
            rest = diffusers_path[len(block) + 1 :]
            if ".resnets." in block:
                rest = RESNET_LAYERS_LDM[rest]
            return f"{ldm}.{rest}"
    raise KeyError(diffusers_path)


# --- names ----------------------------------------------------------------------------------


def kohya_name(target: Target, te_prefix: str = "lora_te_", ldm: bool = False) -> str:
    """`lora_unet_down_blocks_0_..._to_q`, `lora_te_text_model_encoder_layers_0_..._q_proj`."""
    if target.component == "te":
        return te_prefix + target.path.replace(".", "_")
    path = ldm_path(target.path) if ldm else target.path
    return "lora_unet_" + path.replace(".", "_")


def peft_name(target: Target, te_spelling: str = "transformers4") -> str:
    """`unet.<path>` or `text_encoder.<path>`, with or without transformers 4's `text_model.`."""
    if target.component == "unet":
        return f"unet.{target.path}"
    path = target.path
    if te_spelling == "transformers5":
        path = path.removeprefix("text_model.")
    return f"text_encoder.{path}"


# --- factors --------------------------------------------------------------------------------


def _random(generator: torch.Generator, *shape: int, std: float = 0.1) -> torch.Tensor:
    return torch.randn(*shape, generator=generator) * std


def lora_factors(shape: Shape, rank: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(down, up) as kohya's LoRAModule holds them: Linear weights, or Conv2d weights whose down
    keeps the layer's kernel and whose up is 1x1."""
    out_dim, in_dim, *kernel = shape
    down = _random(generator, rank, in_dim, *kernel)
    up = _random(generator, out_dim, rank, *[1] * len(kernel))
    return down, up


def factorization(dimension: int) -> tuple[int, int]:
    """(m, n), m <= n, m * n = dimension, m the largest divisor <= sqrt: LyCORIS' factor -1."""
    m = max(d for d in range(1, math.isqrt(dimension) + 1) if dimension % d == 0)
    return m, dimension // m


def loha_parts(shape: Shape, rank: int, generator: torch.Generator) -> Tensors:
    """LyCORIS LoHa without Tucker: w1_a, w2_a (out, r); w1_b, w2_b (r, in x kh x kw)."""
    out_dim, in_dim, *kernel = shape
    columns = in_dim * math.prod(kernel)
    return {
        "hada_w1_a": _random(generator, out_dim, rank, std=0.3),
        "hada_w1_b": _random(generator, rank, columns, std=0.3),
        "hada_w2_a": _random(generator, out_dim, rank, std=0.3),
        "hada_w2_b": _random(generator, rank, columns, std=0.3),
    }


def lokr_parts(shape: Shape, rank: int, generator: torch.Generator) -> Tensors:
    """LyCORIS LoKr, factor -1: whole w1 (a, c), low-rank w2 = w2_a (b, r) @ w2_b (r, d x kh x kw),
    out = a x b, in = c x d."""
    out_dim, in_dim, *kernel = shape
    a, b = factorization(out_dim)
    c, d = factorization(in_dim)
    return {
        "lokr_w1": _random(generator, a, c, std=0.3),
        "lokr_w2_a": _random(generator, b, rank, std=0.3),
        "lokr_w2_b": _random(generator, rank, d * math.prod(kernel), std=0.3),
    }


def dora_scale(shape: Shape, generator: torch.Generator, side: str = "input") -> torch.Tensor:
    """A DoRA magnitude vector as the file stores it.

    `side="input"`: one per input column, (1, in) or (1, in, 1, 1) for a conv: what A1111's
    `apply_weight_decompose` reads and LyCORIS writes with `wd_on_out=False`. `side="output"`:
    one per output row, (out, 1) or (out, 1, 1, 1): LyCORIS' default (`wd_on_output=True` in
    `lycoris/kohya.py`). Real files hold the norms of the trained weight; positive numbers near
    those of a randomly initialised SD1.5 layer keep the test's weights in their usual range.
    """
    out_dim, in_dim, *kernel = shape
    ones = [1] * len(kernel)
    if side == "input":
        return (0.3 + torch.rand(in_dim, generator=generator) * 0.6).reshape(1, in_dim, *ones)
    return (0.3 + torch.rand(out_dim, generator=generator) * 0.6).reshape(out_dim, 1, *ones)


# --- writers --------------------------------------------------------------------------------


def kohya_lora(
    targets: Iterable[Target],
    rank: int = 4,
    alpha: float | None = 2.0,
    dtype: torch.dtype = torch.float16,
    te_prefix: str = "lora_te_",
    ldm: bool = False,
    peft_parts: bool = False,
    dora: str | None = None,
    seed: int = 0,
) -> Tensors:
    """A kohya LoRA/LoCon: `<name>.lora_down.weight`, `.lora_up.weight`, `.alpha` (shape ()).

    sd-scripts casts the whole state dict to the save dtype, alpha included. `peft_parts` spells
    the factors `.lora_A.weight`/`.lora_B.weight` under kohya names, as some converters do;
    `dora` ("input" or "output") adds `.dora_scale` on that side (see `dora_scale`).
    """
    generator = torch.Generator().manual_seed(seed)
    down_key, up_key = (
        ("lora_A.weight", "lora_B.weight") if peft_parts else ("lora_down.weight", "lora_up.weight")
    )
    tensors: Tensors = {}
    for target in targets:
        name = kohya_name(target, te_prefix, ldm)
        down, up = lora_factors(target.shape, rank, generator)
        tensors[f"{name}.{down_key}"] = down
        tensors[f"{name}.{up_key}"] = up
        if alpha is not None:
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
        if dora:
            tensors[f"{name}.dora_scale"] = dora_scale(target.shape, generator, dora)
    return {key: tensor.to(dtype) for key, tensor in tensors.items()}


def peft_lora(
    targets: Iterable[Target],
    rank: int = 4,
    te_spelling: str = "transformers4",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Tensors:
    """diffusers' `save_lora_weights` layout: lora_A (r, in[, 1, 1]), lora_B (out, r[, 1, 1]), no
    alpha (PEFT's default lora_alpha = r, so scale 1)."""
    generator = torch.Generator().manual_seed(seed)
    tensors: Tensors = {}
    for target in targets:
        name = peft_name(target, te_spelling)
        down, up = lora_factors(target.shape, rank, generator)
        tensors[f"{name}.lora_A.weight"] = down
        tensors[f"{name}.lora_B.weight"] = up
    return {key: tensor.to(dtype) for key, tensor in tensors.items()}


def lycoris_file(
    targets: Iterable[Target],
    parts: Callable[[Shape, int, torch.Generator], Tensors],
    rank: int = 4,
    alpha: float = 2.0,
    dtype: torch.dtype = torch.float16,
    seed: int = 0,
) -> Tensors:
    """A LyCORIS LoHa or LoKr file: the family's parts plus `.alpha` under each kohya name."""
    generator = torch.Generator().manual_seed(seed)
    tensors: Tensors = {}
    for target in targets:
        name = kohya_name(target)
        for part, tensor in parts(target.shape, rank, generator).items():
            tensors[f"{name}.{part}"] = tensor
        tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
    return {key: tensor.to(dtype) for key, tensor in tensors.items()}


def bundled_embedding(token: str, vectors: int, layout: str = "pt", seed: int = 0) -> Tensors:
    """A textual inversion bundled in a LoRA, as LyCORIS' `tools/pack_bundle.py` writes it and
    A1111's `networks.py` reads it (`bundle_emb.<token>.<key>[.<subkey>]`).

    `layout="pt"`: from an A1111 .pt embedding, whose dicts `string_to_param` and
    `string_to_token` become `bundle_emb.<token>.string_to_param.*` (the vectors) and
    `bundle_emb.<token>.string_to_token.*` (an int64 token id, shape ()). `layout="safetensors"`:
    from an A1111 .safetensors embedding, `bundle_emb.<token>.emb_params`.
    """
    generator = torch.Generator().manual_seed(seed)
    values = _random(generator, vectors, TEXT_WIDTH)
    if layout == "safetensors":
        return {f"bundle_emb.{token}.emb_params": values}
    return {
        f"bundle_emb.{token}.string_to_param.*": values,
        f"bundle_emb.{token}.string_to_token.*": torch.tensor(265, dtype=torch.int64),
    }


def stray_module(rank: int = 4, seed: int = 1) -> Tensors:
    """One complete kohya module (3 keys) that names no SD1.5 layer: SD1.5's transformers hold a
    single transformer block, so `transformer_blocks_1` exists only in other models."""
    generator = torch.Generator().manual_seed(seed)
    name = "lora_unet_mid_block_attentions_0_transformer_blocks_1_attn1_to_q"
    down, up = lora_factors((1280, 1280), rank, generator)
    return {
        f"{name}.lora_down.weight": down.half(),
        f"{name}.lora_up.weight": up.half(),
        f"{name}.alpha": torch.tensor(2.0).half(),
    }


def foreign_modules(count: int, rank: int = 4, seed: int = 2) -> Tensors:
    """`count` complete kohya modules of SD1.5 width named after layers SD1.5 lacks."""
    generator = torch.Generator().manual_seed(seed)
    tensors: Tensors = {}
    for block in range(1, count + 1):
        name = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_{block}_attn2_to_k"
        down, up = lora_factors((320, CROSS_ATTENTION), rank, generator)
        tensors[f"{name}.lora_down.weight"] = down.half()
        tensors[f"{name}.lora_up.weight"] = up.half()
        tensors[f"{name}.alpha"] = torch.tensor(2.0).half()
    return tensors


def write(path: Path, tensors: Tensors, metadata: dict[str, str] | None = None) -> Path:
    save_file({key: tensor.contiguous() for key, tensor in tensors.items()}, str(path), metadata)
    return path


# --- smaller selections, for the costlier references ----------------------------------------

SAMPLE_TEXT_LAYERS = (0, 11)
SAMPLE_TRANSFORMERS = (
    "down_blocks.0.attentions.0",  # 320 channels
    "down_blocks.1.attentions.1",  # 640
    "up_blocks.2.attentions.1",  # 640
    "up_blocks.3.attentions.2",  # 320, the last
)
SAMPLE_CONV_PLACES = (
    "down_blocks.0.resnets.0.",  # 320 -> 320
    "down_blocks.1.resnets.0.",  # 320 -> 640, with a 1x1 shortcut
    "down_blocks.0.downsamplers.0.conv",
    "up_blocks.2.upsamplers.0.conv",
    "up_blocks.3.resnets.2.",  # 640 -> 320
)
"""Small enough that the references stay cheap on a CPU; the 1280-channel blocks are covered by
the name-resolution tests over the whole table."""


def sample_targets(conv: bool = False) -> list[Target]:
    """Every kind of layer once or more (text attention and MLP, self/cross attention, GEGLU,
    1x1 projections; with `conv` also 3x3 and 1x1 resnet convs, time projections, resamplers)."""
    texts = [t for t in text_encoder_targets() if int(t.path.split(".")[3]) in SAMPLE_TEXT_LAYERS]
    attention = [
        t
        for t in unet_attention_targets()
        if t.path.startswith(tuple(f"{p}." for p in SAMPLE_TRANSFORMERS))
    ]
    convs = (
        [t for t in unet_conv_targets() if t.path.startswith(SAMPLE_CONV_PLACES)] if conv else []
    )
    return texts + attention + convs
