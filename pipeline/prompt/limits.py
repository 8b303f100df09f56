"""What one prompt may ask for: the bounds the prompt language checks tags and flags against."""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_LORA_WEIGHT = -3.0
MAX_LORA_WEIGHT = 3.0


@dataclass(frozen=True)
class PromptLimits:
    """Bounds passed in by the caller (built from the settings), so the parser holds no policy.

    `max_length` keeps parsing time bounded: Discord allows 6,000 characters in an option.
    `max_attention` bounds |weight| of any attention piece; A1111 has no bound, but weights this
    large only produce noise, and infinite ones would poison the conditioning.
    """

    max_length: int = 6000
    max_loras: int = 5
    min_lora_weight: float = MIN_LORA_WEIGHT
    max_lora_weight: float = MAX_LORA_WEIGHT
    max_hypernets: int = 3
    min_hypernet_strength: float = -3.0
    max_hypernet_strength: float = 3.0
    max_attention: float = 10.0
    max_steps: int = 60
    max_images: int = 4
    min_cfg: float = 1.0
    max_cfg: float = 30.0
    max_pixels: int = 1024 * 1024

    def lora_weight_allowed(self, weight: float) -> bool:
        """The one check of a LoRA weight: in a tag, a style, a library default or an option."""
        return math.isfinite(weight) and self.min_lora_weight <= weight <= self.max_lora_weight

    @property
    def lora_weight_range(self) -> str:
        return f"{self.min_lora_weight:g} to {self.max_lora_weight:g}"
