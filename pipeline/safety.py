"""The image safety checker: one verdict per finished image, flagged or not.

It is diffusers' `StableDiffusionSafetyChecker` (CLIP ViT-L/14 image embeddings compared with 17
concept and 3 special-care embeddings, each with its own threshold) and the CLIP image processor
that goes with it. Unlike the diffusers pipelines, nothing is blacked out here: the image is kept
and only the verdict comes back, so that the bot decides per channel what to do with it.
It runs on the worker thread, once per batch, over the batch's decoded images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pipeline.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.models import Placement

CHECKER_LOGGER = "diffusers.pipelines.stable_diffusion.safety_checker"
"""Its only warning says flagged images were made black, which is not true of ours."""


@dataclass
class SafetyChecker:
    """The checker's model and processor, on the device they run on."""

    model: Any
    processor: Any

    def flagged(self, images: Sequence[Image.Image]) -> list[bool]:
        """Whether each image has an unsafe concept, in the order given.

        The rule is the checker's own: an image is flagged when its cosine similarity to any
        concept embedding, less that concept's threshold, is above 0 (the thresholds are a
        little lower for an image that matches a special-care concept).
        """
        if not images:
            return []
        rgb = [image.convert("RGB") for image in images]
        pixels = self.processor(images=rgb, return_tensors="pt")
        clip_input = pixels.pixel_values.to(self.model.device, self.model.dtype)
        # The checker writes black over the flagged entries of `images`: give it placeholders.
        placeholders = torch.zeros(len(images), 1)
        with torch.inference_mode():
            _, verdicts = self.model(clip_input=clip_input, images=placeholders)
        return [bool(verdict) for verdict in verdicts]


def load_safety_checker(spec: str, placement: Placement) -> SafetyChecker:
    """The checker from a hub id (cached, or downloaded once) or a local folder.

    A folder that has no `preprocessor_config.json` (such as an SD1.5 repository's
    `safety_checker` folder) gets CLIP's standard processor, which is the one the CompVis
    checker ships. Weights that cannot be found are a UserError saying how to get them.
    """
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPImageProcessorPil

    checker_class: Any = StableDiffusionSafetyChecker  # untyped, as DiffusionPipeline says
    # With offload (memory modes medium and low) the card is short of room: the CPU checks.
    on_card = placement.memory_mode == "high"
    device = placement.device if on_card else "cpu"
    dtype = placement.dtype if on_card else torch.float32
    try:
        model = checker_class.from_pretrained(spec, dtype=dtype)
    except Exception as error:
        raise _missing_weights(spec, error) from None
    try:  # the PIL processor: the same numbers without torchvision
        processor = CLIPImageProcessorPil.from_pretrained(spec)
    except OSError:
        processor = CLIPImageProcessorPil()
    logging.getLogger(CHECKER_LOGGER).setLevel(logging.ERROR)
    return SafetyChecker(model.to(device).eval(), processor)


def _missing_weights(spec: str, error: Exception) -> UserError:
    """One line: what failed, and the three ways out (download, a folder, or off)."""
    lines = str(error).strip().splitlines()
    detail = (lines[0] if lines else type(error).__name__).strip().rstrip(".")
    if Path(spec).expanduser().exists():
        get = f"put its config.json and model.safetensors in {spec} (docs/setup.md says how)"
    else:
        get = f"download it once with `hf download {spec}` (needs the network)"
    return UserError(
        f"the safety checker could not be loaded from SAFETY_CHECKER_MODEL={spec!r} ({detail}): "
        f"{get}, or set SAFETY_CHECKER_MODEL to a folder that holds it, or set SAFETY_CHECKER=off"
    )
