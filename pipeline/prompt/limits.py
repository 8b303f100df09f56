"""What one prompt may ask for: the bounds the prompt language checks tags and flags against."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptLimits:
    """Bounds passed in by the caller (built from the settings), so the parser holds no policy.

    `max_length` keeps parsing time bounded: Discord allows 6,000 characters in an option.
    `max_attention` bounds |weight| of any attention piece; A1111 has no bound, but weights this
    large only produce noise, and infinite ones would poison the conditioning.
    """

    max_length: int = 6000
    max_loras: int = 5
    min_lora_weight: float = -3.0
    max_lora_weight: float = 3.0
    max_hypernets: int = 3
    min_hypernet_strength: float = -3.0
    max_hypernet_strength: float = 3.0
    max_attention: float = 10.0
    max_steps: int = 60
    max_images: int = 4
    min_cfg: float = 1.0
    max_cfg: float = 30.0
    max_pixels: int = 1024 * 1024
