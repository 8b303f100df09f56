"""Writers of adapter and embedding files for tests, so no binary file lives in the repository.

Files for the tiny model take their module paths and shapes from a built tiny model, with the
text encoder's paths spelled as trainers write them (transformers 4's `text_model.` level).
"Full size" files take them from SD1.5/SD2/SDXL-shaped models built on the meta device (names
and shapes, no memory), at rank 1 so that even a file covering every module stays a few MB.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

Tensors = dict[str, torch.Tensor]
# Layers each family is usually trained on: attention and feed-forward linears, 1x1 projections,
# and for the conv families the resnet convolutions too.
ATTENTION_LAYERS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
PROJECTIONS = ("proj_in", "proj_out")
TEXT_LAYERS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
CONV_LAYERS = ("conv1", "conv2", "conv_shortcut")


def targets(model: nn.Module, endings: tuple[str, ...]) -> Iterator[tuple[str, torch.Size]]:
    """(module path, weight shape) of every Linear/Conv2d whose path ends with one of `endings`."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d) and name.endswith(endings):
            yield name, module.weight.shape


def unet_targets(unet: nn.Module, conv: bool = False) -> list[tuple[str, torch.Size]]:
    endings = ATTENTION_LAYERS + PROJECTIONS + (CONV_LAYERS if conv else ())
    return list(targets(unet, endings))


def text_targets(text_encoder: nn.Module) -> list[tuple[str, torch.Size]]:
    """Text-encoder modules spelled as trainers write them: transformers 4's `text_model.` path.

    sd-scripts and diffusers keep that level whatever transformers is installed; transformers 5's
    CLIPTextModel has none, so the names of the model under test are not what files say.
    """
    return [
        (name if name.startswith("text_model.") else f"text_model.{name}", shape)
        for name, shape in targets(text_encoder, TEXT_LAYERS)
    ]


def _random(generator: torch.Generator, *shape: int, std: float = 0.1) -> torch.Tensor:
    return torch.randn(*shape, generator=generator) * std


def lora_parts(
    shape: torch.Size, rank: int, generator: torch.Generator, mid: bool = False
) -> Tensors:
    """kohya LoRA/LoCon factors for a weight of `shape`; `mid` adds a Tucker core (3x3 convs)."""
    out_dim, in_dim, *kernel = shape
    if kernel and mid:
        return {
            "lora_down.weight": _random(generator, rank, in_dim, 1, 1),
            "lora_mid.weight": _random(generator, rank, rank, *kernel),
            "lora_up.weight": _random(generator, out_dim, rank, 1, 1),
        }
    ones = [1] * len(kernel)
    return {
        "lora_down.weight": _random(generator, rank, in_dim, *kernel),
        "lora_up.weight": _random(generator, out_dim, rank, *ones),
    }


def loha_parts(
    shape: torch.Size, rank: int, generator: torch.Generator, tucker: bool = False
) -> Tensors:
    """LoHa factors in lycoris's layout: Tucker cores only for conv kernels wider than 1x1."""
    out_dim, in_dim, *kernel = shape
    if tucker and kernel and kernel != [1, 1]:
        return {
            "hada_t1": _random(generator, rank, rank, *kernel, std=0.5),
            "hada_w1_a": _random(generator, rank, out_dim, std=0.5),
            "hada_w1_b": _random(generator, rank, in_dim, std=0.5),
            "hada_t2": _random(generator, rank, rank, *kernel, std=0.5),
            "hada_w2_a": _random(generator, rank, out_dim, std=0.5),
            "hada_w2_b": _random(generator, rank, in_dim, std=0.5),
        }
    flat_in = in_dim * (kernel[0] * kernel[1] if kernel else 1)
    return {
        "hada_w1_a": _random(generator, out_dim, rank, std=0.5),
        "hada_w1_b": _random(generator, rank, flat_in, std=0.5),
        "hada_w2_a": _random(generator, out_dim, rank, std=0.5),
        "hada_w2_b": _random(generator, rank, flat_in, std=0.5),
    }


def lokr_parts(
    shape: torch.Size, rank: int, generator: torch.Generator, tucker: bool = False, factor: int = 4
) -> Tensors:
    """LoKr factors: whole w1 (factor x factor), w2 low rank (Tucker for wide conv kernels)."""
    out_dim, in_dim, *kernel = shape
    w1 = _random(generator, factor, factor, std=0.5)
    out_rest, in_rest = out_dim // factor, in_dim // factor
    if tucker and kernel and kernel != [1, 1]:
        return {
            "lokr_w1": w1,
            "lokr_t2": _random(generator, rank, rank, *kernel, std=0.5),
            "lokr_w2_a": _random(generator, rank, out_rest, std=0.5),
            "lokr_w2_b": _random(generator, rank, in_rest, std=0.5),
        }
    flat_in = in_rest * (kernel[0] * kernel[1] if kernel else 1)
    return {
        "lokr_w1": w1,
        "lokr_w2_a": _random(generator, out_rest, rank, std=0.5),
        "lokr_w2_b": _random(generator, rank, flat_in, std=0.5),
    }


PartsMaker = Callable[[torch.Size, int, torch.Generator], Tensors]


def kohya_tensors(
    unet_modules: list[tuple[str, torch.Size]],
    text_modules: list[tuple[str, torch.Size]],
    make_parts: PartsMaker,
    rank: int,
    alpha: float | None,
    seed: int = 0,
    text_prefix: str = "lora_te_",
) -> Tensors:
    """A kohya-named state dict: `lora_unet_<path with _>.<part>` and `<text_prefix><path>...`."""
    generator = torch.Generator().manual_seed(seed)
    tensors: Tensors = {}
    named = [("lora_unet_", unet_modules), (text_prefix, text_modules)]
    for prefix, modules in named:
        for path, shape in modules:
            name = prefix + path.replace(".", "_")
            for part, tensor in make_parts(shape, rank, generator).items():
                tensors[f"{name}.{part}"] = tensor
            if alpha is not None:
                tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
    return tensors


def peft_tensors(
    unet_modules: list[tuple[str, torch.Size]],
    text_modules: list[tuple[str, torch.Size]],
    rank: int,
    seed: int = 0,
) -> Tensors:
    """The diffusers/PEFT layout: `unet.<path>.lora_A.weight` / `lora_B.weight`, no alpha."""
    generator = torch.Generator().manual_seed(seed)
    tensors: Tensors = {}
    for prefix, modules in (("unet.", unet_modules), ("text_encoder.", text_modules)):
        for path, shape in modules:
            parts = lora_parts(shape, rank, generator)
            tensors[f"{prefix}{path}.lora_A.weight"] = parts["lora_down.weight"]
            tensors[f"{prefix}{path}.lora_B.weight"] = parts["lora_up.weight"]
    return tensors


def diffusers_2023_tensors(
    unet_modules: list[tuple[str, torch.Size]],
    text_modules: list[tuple[str, torch.Size]],
    rank: int,
    seed: int = 0,
) -> Tensors:
    """diffusers' pre-PEFT layout (train_dreambooth_lora.py, 2023): attention processors' LoRA
    layers in the UNet (`...attn1.processor.to_q_lora.down.weight`) and patched text-encoder
    linears (`text_encoder.<path>.lora_linear_layer.down.weight`)."""
    generator = torch.Generator().manual_seed(seed)
    tensors: Tensors = {}
    for path, shape in unet_modules:
        attention, _, layer = path.rpartition(".attn")
        if not attention or not layer.startswith(("1.to_", "2.to_")):
            continue
        block, name = f"{attention}.attn{layer[0]}", layer[2:].removesuffix(".0")
        parts = lora_parts(shape, rank, generator)
        tensors[f"unet.{block}.processor.{name}_lora.down.weight"] = parts["lora_down.weight"]
        tensors[f"unet.{block}.processor.{name}_lora.up.weight"] = parts["lora_up.weight"]
    for path, shape in text_modules:
        parts = lora_parts(shape, rank, generator)
        tensors[f"text_encoder.{path}.lora_linear_layer.down.weight"] = parts["lora_down.weight"]
        tensors[f"text_encoder.{path}.lora_linear_layer.up.weight"] = parts["lora_up.weight"]
    return tensors


def write(path: Path, tensors: Tensors, metadata: dict[str, str] | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def tag_metadata(tags: dict[str, int]) -> dict[str, str]:
    """kohya training metadata with `tags` as the tag frequency of one dataset folder."""
    return {
        "ss_tag_frequency": json.dumps({"10_subject": tags}),
        "ss_output_name": "test-subject",
        "ss_base_model_version": "sd_v1",
    }


def write_embedding(
    path: Path, width: int, count: int, token: str | None = None, seed: int = 0
) -> Path:
    """A1111 layout (`emb_params`) unless `token` is given (diffusers `{token: vectors}`)."""
    vectors = _random(torch.Generator().manual_seed(seed), count, width)
    return write(path, {token or "emb_params": vectors})


# Full-size shapes, built on the meta device: names and shapes only, no weights in memory.


def meta_models(base: str) -> tuple[nn.Module, nn.Module]:
    """A UNet and text encoder with the real shapes of `base` ("sd1" or "sd2"), on meta."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    width = {"sd1": 768, "sd2": 1024}[base]
    unet_config = {"cross_attention_dim": width}
    if base == "sd2":
        unet_config |= {"attention_head_dim": (5, 10, 20, 20), "use_linear_projection": True}
    text_config = CLIPTextConfig(
        hidden_size=width,
        intermediate_size=width * 4,
        num_hidden_layers=12 if base == "sd1" else 23,
        num_attention_heads=width // 64,
    )
    with torch.device("meta"):
        return UNet2DConditionModel(**unet_config), CLIPTextModel(text_config)


def sdxl_tensors() -> Tensors:
    """A few modules of an SDXL LoRA: text encoders of width 768 and 1280, 2048-wide attn2."""
    generator = torch.Generator().manual_seed(0)
    tensors: Tensors = {}
    modules = {
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (640, 2048),
    }
    for name, shape in modules.items():
        for part, tensor in lora_parts(torch.Size(shape), 1, generator).items():
            tensors[f"{name}.{part}"] = tensor.half()
    return tensors


# Bad files: each is refused for a reason the tests name.


def write_pickle(path: Path) -> Path:
    """A pickle renamed to .safetensors. Written only; nothing in the project ever loads it."""
    path.write_bytes(pickle.dumps({"state_dict": {"weight": [0.0] * 4}}, protocol=4))
    return path


def write_zip(path: Path) -> Path:
    """A zip archive, which is what torch.save writes, renamed to .safetensors."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return path


def write_png(path: Path) -> Path:
    """The first bytes of a PNG image, renamed to .safetensors."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64))
    return path


def truncate(source: Path, path: Path, cut: int = 100) -> Path:
    """A copy of `source` missing its last `cut` bytes, like an interrupted download."""
    path.write_bytes(source.read_bytes()[:-cut])
    return path
