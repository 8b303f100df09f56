"""Built-in random-weight models: `tiny` (and `tiny-inpainting`) for tests and first tries,
`sd15-random` for benchmarks.

`tiny` has the same block types as SD1.5 (cross-attention down/up blocks, a KL VAE with 8x
downsampling and 4 latent channels, a CLIP text transformer with the real tokenizer), but widths
of 32-64, so it builds in about a second and draws noise on any CPU.
"""

from __future__ import annotations

from typing import Any

import torch

TINY_WIDTH = 32
"""Text-encoder width of the tiny model: its cross-attention dim and its embedding width."""

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "cross_attention_dim": TINY_WIDTH,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (32, 32, 32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}

TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": TINY_WIDTH,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
    "hidden_act": "quick_gelu",
    "projection_dim": TINY_WIDTH,
}

SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "skip_prk_steps": True,
}


def build_tiny_components(seed: int = 0, in_channels: int = 4) -> dict[str, Any]:
    """Build the tiny UNet, VAE, text encoder, tokenizer and scheduler, the same every time.

    `in_channels` 9 makes `tiny-inpainting`: its UNet also reads the mask and the masked
    picture's latents, as SD1.5 inpainting checkpoints do.
    """
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pipeline.tokenizer import load_clip_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Any: diffusers' models are untyped (mypy does not see them as nn.Modules).
        unet: Any = UNet2DConditionModel(**UNET_CONFIG | {"in_channels": in_channels})
        vae: Any = AutoencoderKL(**VAE_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": load_clip_tokenizer(),
        "scheduler": PNDMScheduler.from_config(SCHEDULER_CONFIG),
    }


def build_sd15_random_components(seed: int = 0) -> dict[str, Any]:
    """Full-size SD1.5 parts with random weights: the real cost of every step, for benchmarks.

    Random weights run at the same speed as trained ones, so throughput figures need no download.
    """
    import json

    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pipeline.model_configs import config_dir
    from pipeline.tokenizer import load_clip_tokenizer

    configs = config_dir()

    def read(part: str, name: str = "config.json") -> dict[str, Any]:
        return json.loads((configs / part / name).read_text())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(read("unet"))
        vae = AutoencoderKL.from_config(read("vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**read("text_encoder")))
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": load_clip_tokenizer(),
        "scheduler": PNDMScheduler.from_config(read("scheduler", "scheduler_config.json")),
    }
