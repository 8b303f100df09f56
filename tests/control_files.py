"""Tiny ControlNet files, written the two ways SD1.5 ControlNets ship.

No real ControlNet can be downloaded in tests, so these build one from the tiny UNet's config
(`ControlNetModel.from_unet`, as a trainer starts one) and save it:

- in the diffusers layout (`diffusion_pytorch_model.safetensors` of `lllyasviel/sd-controlnet-*`
  and the `control_v11*` diffusers repos): the model's own state-dict names;
- in the original layout of the ControlNet 1.0/1.1 files (`control_v11p_sd15_canny.pth`, and
  its `.safetensors` conversions on Civitai): under `control_model.`, the UNet's encoder in LDM
  names (`time_embed`, `input_blocks`, `middle_block`), the hint encoder as the
  `input_hint_block` Sequential (convolutions at the even indices, SiLUs between), and the zero
  convolutions as `zero_convs.N.0` and `middle_block_out.0`.

The original names are the inverse of diffusers' `convert_controlnet_checkpoint`
(`loaders/single_file_utils.py`), whose loading is the reference the tests compare with.
A trained ControlNet's zero convolutions are not zero, so `random_zero_convs` fills them, or a
control would change nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tests.pipeline.ldm_checkpoint import rename, unet_renames

ORIGINAL_PREFIX = "control_model."


def tiny_controlnet(seed: int = 0, scale: float = 0.5) -> Any:
    """A ControlNet for the tiny model whose every weight (zero convolutions too) is random."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from pipeline.tiny import UNET_CONFIG

    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(UNet2DConditionModel(**UNET_CONFIG))
    random_zero_convs(controlnet, seed, scale)
    return controlnet.eval()


def random_zero_convs(controlnet: Any, seed: int, scale: float) -> None:
    """Give the zero convolutions random weights, as training leaves them.

    The hint encoder's last convolution starts at zero too (diffusers' `zero_module`): left so,
    the control map would change nothing.
    """
    generator = torch.Generator().manual_seed(seed + 1)
    convs = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    with torch.no_grad():
        for conv in convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * scale)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * scale)


def original_names(controlnet: Any) -> dict[str, torch.Tensor]:
    """The ControlNet's weights under the original layout's names, `control_model.` included."""
    config = controlnet.config
    hint = len(config["conditioning_embedding_out_channels"])
    renames: list[tuple[str, str, Any]] = [
        entry
        for entry in unet_renames({**config, "up_block_types": ()})
        if not entry[1].startswith(("out.", "output_blocks."))
    ]
    renames += [
        ("controlnet_cond_embedding.conv_in.", "input_hint_block.0.", {}),
        ("controlnet_cond_embedding.conv_out.", f"input_hint_block.{4 * hint - 2}.", {}),
        ("controlnet_mid_block.", "middle_block_out.0.", {}),
    ]
    renames += [
        (f"controlnet_cond_embedding.blocks.{i}.", f"input_hint_block.{2 * (i + 1)}.", {})
        for i in range(2 * (hint - 1))
    ]
    renames += [
        (f"controlnet_down_blocks.{i}.", f"zero_convs.{i}.0.", {})
        for i in range(len(controlnet.controlnet_down_blocks))
    ]
    state = rename(controlnet.state_dict(), renames)
    return {ORIGINAL_PREFIX + key: tensor.contiguous() for key, tensor in state.items()}


def write_diffusers_layout(path: Path, controlnet: Any) -> Path:
    """The ControlNet as a diffusers-layout `.safetensors` file."""
    state = {key: tensor.contiguous() for key, tensor in controlnet.state_dict().items()}
    save_file(state, str(path))
    return path


def write_original_layout(path: Path, controlnet: Any) -> Path:
    """The ControlNet as a ControlNet 1.1 (original layout) `.safetensors` file."""
    save_file(original_names(controlnet), str(path))
    return path
