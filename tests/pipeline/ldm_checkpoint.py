"""Tiny checkpoints in the original LDM (CompVis) layout, as SD1.5 models ship from Civitai.

No real checkpoint can be downloaded in tests, so this writes the `tiny` model's weights the way
a real SD1.5 `.safetensors` file stores them, and `from_single_file` has to convert them back:

- the UNet under `model.diffusion_model.`: `time_embed`, `input_blocks`, `middle_block`,
  `output_blocks` and `out`, with resnets named `in_layers`/`out_layers`/`emb_layers`;
- the VAE under `first_stage_model.`: `encoder.down.N.block.M`, `decoder.up.N` counted from the
  bottom, `mid.block_1`/`mid.attn_1`, `norm_out`, and the attention's q/k/v/proj_out stored as
  1x1 convolutions;
- the CLIP text model under `cond_stage_model.transformer.text_model.`, with the
  `embeddings.position_ids` buffer real files carry;
- the DDPM schedule buffers (`betas`, `alphas_cumprod`) real files keep at the top level.

`with_inpainting_unet` gives the same parts with an inpainting UNet (9 input channels).

The names are the inverse of the LDM -> diffusers conversion in diffusers'
`loaders/single_file_utils.py` (`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
`convert_ldm_clip_checkpoint`); tests check that converting back gives the same tensors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET_PARTS = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION_PARTS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}

Rename = tuple[str, str, Mapping[str, str]]
"""A diffusers key prefix, the LDM prefix it becomes, and renames of the part right after it."""


def unet_renames(config: Mapping[str, Any]) -> list[Rename]:
    """Where each diffusers UNet module sits in the LDM `input/middle/output_blocks` lists.

    LDM numbers the down path as one flat list: `input_blocks.0` is conv_in, then per block
    `layers_per_block` (resnet, attention) pairs and a downsampler `op` for all but the last.
    The up path is `output_blocks`, `layers_per_block + 1` per block, the upsampler riding in
    the last entry of each block after its attention (slot 2) or its resnet (slot 1).
    """
    layers = config["layers_per_block"]
    renames: list[Rename] = [
        ("time_embedding.linear_1.", "time_embed.0.", {}),
        ("time_embedding.linear_2.", "time_embed.2.", {}),
        ("conv_in.", "input_blocks.0.0.", {}),
        ("conv_norm_out.", "out.0.", {}),
        ("conv_out.", "out.2.", {}),
        ("mid_block.resnets.0.", "middle_block.0.", UNET_RESNET_PARTS),
        ("mid_block.attentions.0.", "middle_block.1.", {}),
        ("mid_block.resnets.1.", "middle_block.2.", UNET_RESNET_PARTS),
    ]
    down_types = config["down_block_types"]
    index = 1
    for block, kind in enumerate(down_types):
        for layer in range(layers):
            renames.append(
                (
                    f"down_blocks.{block}.resnets.{layer}.",
                    f"input_blocks.{index}.0.",
                    UNET_RESNET_PARTS,
                )
            )
            if "CrossAttn" in kind:
                renames.append(
                    (f"down_blocks.{block}.attentions.{layer}.", f"input_blocks.{index}.1.", {})
                )
            index += 1
        if block < len(down_types) - 1:
            renames.append(
                (f"down_blocks.{block}.downsamplers.0.conv.", f"input_blocks.{index}.0.op.", {})
            )
            index += 1
    up_types = config["up_block_types"]
    index = 0
    for block, kind in enumerate(up_types):
        attention = "CrossAttn" in kind
        for layer in range(layers + 1):
            renames.append(
                (
                    f"up_blocks.{block}.resnets.{layer}.",
                    f"output_blocks.{index}.0.",
                    UNET_RESNET_PARTS,
                )
            )
            if attention:
                renames.append(
                    (f"up_blocks.{block}.attentions.{layer}.", f"output_blocks.{index}.1.", {})
                )
            index += 1
        if block < len(up_types) - 1:
            slot = 2 if attention else 1
            renames.append(
                (
                    f"up_blocks.{block}.upsamplers.0.conv.",
                    f"output_blocks.{index - 1}.{slot}.conv.",
                    {},
                )
            )
    return renames


def vae_renames(config: Mapping[str, Any]) -> list[Rename]:
    """Where each diffusers VAE module sits in LDM's encoder/decoder.

    LDM numbers the decoder's `up` list by resolution level, like the encoder's `down`: `up.0`
    is full resolution and runs last, so diffusers' `up_blocks.0` (runs first) is `up.{n-1}`.
    """
    count = len(config["block_out_channels"])
    renames: list[Rename] = [
        ("quant_conv.", "quant_conv.", {}),
        ("post_quant_conv.", "post_quant_conv.", {}),
    ]
    for side in ("encoder", "decoder"):
        renames += [
            (f"{side}.conv_in.", f"{side}.conv_in.", {}),
            (f"{side}.conv_out.", f"{side}.conv_out.", {}),
            (f"{side}.conv_norm_out.", f"{side}.norm_out.", {}),
            (f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1.", VAE_RESNET_PARTS),
            (f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2.", VAE_RESNET_PARTS),
            (f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1.", VAE_ATTENTION_PARTS),
        ]
    layers = config["layers_per_block"]
    for block in range(count):
        up = count - 1 - block
        for layer in range(layers):
            encoder = (
                f"encoder.down_blocks.{block}.resnets.{layer}.",
                f"encoder.down.{block}.block.{layer}.",
            )
            renames.append((*encoder, VAE_RESNET_PARTS))
        for layer in range(layers + 1):
            decoder = (
                f"decoder.up_blocks.{block}.resnets.{layer}.",
                f"decoder.up.{up}.block.{layer}.",
            )
            renames.append((*decoder, VAE_RESNET_PARTS))
        renames += [
            (
                f"encoder.down_blocks.{block}.downsamplers.0.conv.",
                f"encoder.down.{block}.downsample.conv.",
                {},
            ),
            (
                f"decoder.up_blocks.{block}.upsamplers.0.conv.",
                f"decoder.up.{up}.upsample.conv.",
                {},
            ),
        ]
    return renames


def rename(state: Mapping[str, torch.Tensor], renames: Iterable[Rename]) -> dict[str, torch.Tensor]:
    """Apply the first matching prefix rename to every key; a key with none is an error."""
    renames = sorted(renames, key=lambda entry: -len(entry[0]))
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for old, new, parts in renames:
            if key.startswith(old):
                rest = key[len(old) :]
                for part, ldm_part in parts.items():
                    if rest.startswith(part + "."):
                        rest = ldm_part + rest[len(part) :]
                        break
                out[new + rest] = tensor
                break
        else:
            raise KeyError(f"no LDM name for {key!r}")
    return out


def unet_to_ldm(unet: Any) -> dict[str, torch.Tensor]:
    """The UNet's weights under their LDM names, without the `model.diffusion_model.` prefix."""
    return rename(unet.state_dict(), unet_renames(unet.config))


def vae_to_ldm(vae: Any) -> dict[str, torch.Tensor]:
    """The VAE's weights under their LDM names (no prefix), attention projections as 1x1 convs."""
    state = rename(vae.state_dict(), vae_renames(vae.config))
    for key, tensor in state.items():
        if ".mid.attn_1." in key and key.endswith(
            ("q.weight", "k.weight", "v.weight", "proj_out.weight")
        ):
            state[key] = tensor[:, :, None, None]
    return state


def clip_to_ldm(text_encoder: Any) -> dict[str, torch.Tensor]:
    """The CLIP text model's weights under `text_model.` names, with `position_ids` as in SD1.5.

    transformers 5 flattened `CLIPTextModel` (no `text_model.` in its own names); SD1.5 files
    still have it, so it is added back.
    """
    state = dict(text_encoder.state_dict())
    positions = text_encoder.config.max_position_embeddings
    state.setdefault("embeddings.position_ids", torch.arange(positions)[None])
    return {f"text_model.{key}": tensor for key, tensor in state.items()}


def schedule_buffers(config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The DDPM buffers LDM training saved with the model; loaders must ignore them."""
    steps = config["num_train_timesteps"]
    betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, steps) ** 2
    return {"betas": betas, "alphas_cumprod": torch.cumprod(1 - betas, 0)}


def ldm_state_dict(components: Mapping[str, Any], *, vae: bool = True) -> dict[str, torch.Tensor]:
    """One LDM-layout state dict of a pipeline's UNet, VAE (unless `vae=False`) and text model."""
    state = {UNET_PREFIX + key: t for key, t in unet_to_ldm(components["unet"]).items()}
    if vae:
        state |= {VAE_PREFIX + key: t for key, t in vae_to_ldm(components["vae"]).items()}
    state |= {
        "cond_stage_model.transformer." + key: tensor
        for key, tensor in clip_to_ldm(components["text_encoder"]).items()
    }
    state |= schedule_buffers(components["scheduler"].config)
    return state


def save(state: Mapping[str, torch.Tensor], path: Path) -> Path:
    """Write a state dict as `.safetensors` (own, contiguous copies: no shared storage)."""
    from safetensors.torch import save_file

    tensors = {key: tensor.detach().clone().contiguous() for key, tensor in state.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def write_checkpoint(path: Path, components: Mapping[str, Any], *, vae: bool = True) -> Path:
    """Save `components` (as from `build_tiny_components()`) as one LDM-layout checkpoint."""
    return save(ldm_state_dict(components, vae=vae), path)


def with_inpainting_unet(components: Mapping[str, Any], in_channels: int = 9) -> dict[str, Any]:
    """`components` with a UNet of `in_channels` inputs, as inpainting checkpoints have.

    sd-v1-5-inpainting and Civitai "-inpainting" merges widen only `conv_in`
    (`input_blocks.0.0.weight`, shape (320, 9, 3, 3) at full size): noisy latents, the mask and
    the masked image's latents. Everything else keeps the text-to-image architecture.
    """
    from diffusers import UNet2DConditionModel

    unet = components["unet"]
    config = {**unet.config, "in_channels": in_channels}
    widened = UNet2DConditionModel.from_config(config).eval()
    return {**components, "unet": widened}


def write_vae(path: Path, vae: Any, prefix: str = VAE_PREFIX) -> Path:
    """Save a VAE alone in LDM layout.

    Keys are `first_stage_model.*` as cut out of a checkpoint, or bare (`prefix=""`) as
    stabilityai's sd-vae-ft-mse `.safetensors` files ship.
    """
    return save({prefix + key: tensor for key, tensor in vae_to_ldm(vae).items()}, path)


def write_configs(folder: Path, components: Mapping[str, Any]) -> Path:
    """A diffusers-format config folder for `components`, like `pipeline/configs/sd15`.

    `model_index.json` is the shipped SD1.5 one (same classes); each part's config is what the
    part itself saves, so the folder describes exactly the tiny architecture.
    """
    from pipeline.models import config_dir

    folder.mkdir(parents=True, exist_ok=True)
    index = json.loads((config_dir() / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    components["unet"].save_config(folder / "unet")
    components["vae"].save_config(folder / "vae")
    components["scheduler"].save_config(folder / "scheduler")
    components["text_encoder"].config.save_pretrained(folder / "text_encoder")
    return folder
