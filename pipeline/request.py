"""What a user asks for: the frozen request types shared by the queue, the engine and storage."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_SEED = 2**53 - 1
"""Seeds stay below 2**53 so Discord integer options, JSON and SQLite all hold them exactly."""

RNG_SOURCES = ("CPU", "GPU", "NV")
"""A1111's `RNG` settings, where the noise numbers come from (pipeline/noise.py)."""


class Mode(StrEnum):
    """Which operation made an image; also part of the batch key."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    UPSCALE = "upscale"
    VARIATION = "variation"
    REROLL = "reroll"


@dataclass(frozen=True)
class LoraRef:
    """One `<lora:name:te:unet>` use: a registry name and its text-encoder and UNet weights."""

    name: str
    te_weight: float = 1.0
    unet_weight: float = 1.0


@dataclass(frozen=True)
class HypernetRef:
    """One `<hypernet:name:strength>` use: a registry name and its strength."""

    name: str
    strength: float = 1.0


@dataclass(frozen=True)
class HiresSpec:
    """Highres fix: upscale the base result by `scale`, then refine with `steps` at `denoise`."""

    scale: float = 2.0
    steps: int = 15
    denoise: float = 0.5
    upscaler: str = "Latent"


@dataclass(frozen=True)
class GenerationRequest:
    """Everything needed to reproduce one job's images.

    `seed` is the first image's seed; image i uses seed + i, as A1111 does. Variations keep the
    parent's seed for every image and step the variation seed instead.
    """

    prompt: str
    negative: str = ""
    width: int = 512
    height: int = 512
    steps: int = 25
    cfg: float = 7.0
    sampler: str = "DPM++ 2M"
    schedule: str = "Automatic"
    seed: int = 0
    count: int = 1
    clip_skip: int = 1
    rng: str = "CPU"
    """Where the noise is drawn, as A1111's RNG setting: CPU, GPU or NV (pipeline/noise.py)."""
    ensd: int = 0
    """A1111's eta noise seed delta: added to the seed of the sampler's step noise."""
    model: str = "default"
    loras: tuple[LoraRef, ...] = ()
    hypernets: tuple[HypernetRef, ...] = ()
    """In prompt order: each one's MLPs take the previous one's output, as in A1111."""
    hires: HiresSpec | None = None
    mode: Mode = Mode.TXT2IMG
    strength: float | None = None
    variation_seed: int | None = None
    variation_strength: float = 0.0
    init_image: str | None = None
    parent_image_id: int | None = None
    extras: tuple[tuple[str, str], ...] = field(default=())

    def image_seeds(self, index: int) -> tuple[int, int | None]:
        """The (seed, variation seed) of image `index` of this request."""
        if self.variation_seed is not None and self.variation_strength > 0:
            return self.seed, self.variation_seed + index
        return self.seed + index, None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GenerationRequest:
        raw: dict[str, Any] = json.loads(text)
        raw["loras"] = tuple(LoraRef(**ref) for ref in raw.get("loras", ()))
        raw["hypernets"] = tuple(HypernetRef(**ref) for ref in raw.get("hypernets", ()))
        raw["hires"] = HiresSpec(**raw["hires"]) if raw.get("hires") else None
        raw["mode"] = Mode(raw.get("mode", Mode.TXT2IMG))
        raw["extras"] = tuple(tuple(pair) for pair in raw.get("extras", ()))
        return cls(**raw)
