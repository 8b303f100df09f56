"""A miniature `StableDiffusionSafetyChecker` saved as a folder, with verdicts set from outside.

The architecture is the real one from a small CLIP config with random weights; the verdict is
forced through the checker's own thresholds (`concept_embeds_weights` and
`special_care_embeds_weights`): its documented rule flags an image when a cosine similarity
less its threshold is above 0, and a cosine similarity lies in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessorPil

IMAGE_SIDE = 32

EVERY_IMAGE = -2.0
"""A threshold under every cosine similarity: every image is above it."""
NO_IMAGE = 2.0
"""A threshold over every cosine similarity: no image reaches it."""


def tiny_checker(threshold: float = NO_IMAGE) -> StableDiffusionSafetyChecker:
    """Random weights, every concept at `threshold`; the special-care concepts never match."""
    config = CLIPConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": IMAGE_SIDE,
            "patch_size": 16,
        },
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "vocab_size": 99,
            "bos_token_id": 0,
            "eos_token_id": 1,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(NO_IMAGE)
    return checker


def save_checker(folder: Path, checker: StableDiffusionSafetyChecker) -> Path:
    """`folder` as `hf download` leaves it: config, safetensors weights, processor config."""
    checker.save_pretrained(folder)
    side = {"shortest_edge": IMAGE_SIDE}
    crop = {"height": IMAGE_SIDE, "width": IMAGE_SIDE}
    CLIPImageProcessorPil(size=side, crop_size=crop).save_pretrained(folder)
    return folder


def save_tiny_checker(folder: Path, flags_every_image: bool) -> Path:
    """A checker folder that flags every image, or none."""
    return save_checker(folder, tiny_checker(EVERY_IMAGE if flags_every_image else NO_IMAGE))
