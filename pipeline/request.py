"""What a user asks for: the frozen request types shared by the queue, the engine and storage."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_SEED = 2**53 - 1
"""Seeds stay below 2**53 so Discord integer options, JSON and SQLite all hold them exactly."""

DEFAULT_STRENGTH = 0.75
"""A1111's img2img denoising strength, which a pass from a picture without one runs at."""

RNG_SOURCES = ("CPU", "GPU", "NV")
"""A1111's `RNG` settings, where the noise numbers come from (pipeline/noise.py)."""


class Mode(StrEnum):
    """Which operation made an image; also part of the batch key."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    UPSCALE = "upscale"
    VARIATION = "variation"
    REROLL = "reroll"
    INPAINT = "inpaint"
    """Repaint the white part of `mask_image` over `init_image`."""
    OUTPAINT = "outpaint"
    """Paint a canvas grown around `init_image` (zoom out, pan, make square, free outpaint): the
    exact operation is lineage, kept by the bot; for the engine it is a masked pass."""


EDIT_MODES = frozenset({Mode.INPAINT, Mode.OUTPAINT})
"""The masked passes: they need `init_image` and `mask_image`, and may use `inpaint`."""

INPAINT_AREAS = ("whole", "masked")
"""A1111's "Inpaint area": the whole picture, or only the masked part (cropped, then pasted)."""

INPAINT_FILLS = ("original", "latent noise", "latent nothing")
"""A1111's "Masked content" that Dreamcord offers: what the masked latents start from."""

MAX_CONTROL_UNITS = 3
"""ControlNet units one request may use, as A1111's ControlNet extension offers by default."""

MAX_IMAGE_PROMPTS = 5
"""Pictures one request may take as image prompts: Midjourney's /blend takes 2 to 5."""

CONTROL_PREPROCESSORS = ("none", "canny", "invert", "depth")
"""Preprocessors built in: `none` takes the picture as a ready map (a pose skeleton, a depth
map, a scribble), `invert` turns black lines on white into the white-on-black maps ControlNet
reads, `canny` draws the picture's edges (pipeline/control/preprocess.py), `depth` estimates
its depth with the model in DATA_DIR/annotators/depth (pipeline/control/annotators.py)."""


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
class ControlUnit:
    """One ControlNet unit: a library model guiding the picture by a control map.

    `image` is the stored map the engine reads, already preprocessed at the request's size
    when the request was built (so Reroll, V and U reuse it and Info can show it);
    `preprocessor` is what made it, kept for the infotext. `start` and `end` are fractions of
    each pass's steps, as A1111's "Guidance Start/End"; `weight` scales the model's residuals.
    """

    model: str
    image: str
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    preprocessor: str = "none"


@dataclass(frozen=True)
class ImagePrompt:
    """One picture for the IP-Adapter: a stored image and its weight.

    A `style` prompt (`--sref`) feeds only the adapter's style layers, so it lends its look and
    not its content.
    """

    image: str
    weight: float = 1.0
    style: bool = False


@dataclass(frozen=True)
class HiresSpec:
    """Highres fix: upscale the base result by `scale`, then refine with `steps` at `denoise`."""

    scale: float = 2.0
    steps: int = 15
    denoise: float = 0.5
    upscaler: str = "Latent"


@dataclass(frozen=True)
class InpaintSpec:
    """How a masked pass treats its mask, as A1111's inpaint settings.

    `mask_blur` is the Gaussian radius of the mask's edge in pixels (0 for an outpaint, whose
    picture stays exactly as it was: see `pipeline.limits.check_edit`); `area` "masked" works on
    the mask's bounding box grown by `padding` pixels at the model's native size, then pastes
    it back; `fill` is what the masked part starts from (see INPAINT_FILLS).
    """

    mask_blur: int = 4
    area: str = "whole"
    padding: int = 32
    fill: str = "original"


@dataclass(frozen=True)
class TileSpec:
    """A tiled upscale's pass (pipeline/tiled.py): overlapping tiles of `size` pixels a side,
    `overlap` pixels shared by neighbours, denoised `batch` tiles to a UNet call.

    Memory follows the tile and the batch, not the image, so a 4096x4096 upscale runs where a
    batch of `batch` 512x512 images does.
    """

    size: int = 512
    overlap: int = 64
    batch: int = 4


FAST_TOKEN_MERGING = 0.5
"""`--fast`'s token merging ratio: the most tomesd's author recommends (`apply_patch`'s
docstring). Its gain grows with the image size; it costs fine detail: for drafts, not finals."""
MAX_TOKEN_MERGING = 0.75
"""tomesd merges at most 1 - 1 / (2 x 2) of the tokens with its default 2x2 strides."""


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
    mask_image: str | None = None
    """A stored PNG mask the size of `init_image` (white repaints), for the edit modes."""
    inpaint: InpaintSpec | None = None
    """The mask's treatment for the edit modes; None means InpaintSpec's defaults."""
    controls: tuple[ControlUnit, ...] = ()
    """ControlNet units, at most MAX_CONTROL_UNITS, in the order A1111 numbers them."""
    image_prompts: tuple[ImagePrompt, ...] = ()
    """IP-Adapter pictures (`/blend`, `--iw`, `--sref`)."""
    tiles: TileSpec | None = None
    """An upscale denoised in blended tiles (big images); None: one whole-image pass."""
    token_merging: float = 0.0
    """Fast mode (`--fast`): the share of tokens tomesd merges in the UNet's self-attention,
    A1111's "Token merging ratio"; 0 merges none (the default: exact images)."""
    parent_image_id: int | None = None
    extras: tuple[tuple[str, str], ...] = field(default=())

    def image_seeds(self, index: int) -> tuple[int, int | None]:
        """The (seed, variation seed) of image `index` of this request."""
        if self.variation_seed is not None and self.variation_strength > 0:
            return self.seed, self.variation_seed + index
        return self.seed + index, None

    @property
    def inpaint_spec(self) -> InpaintSpec:
        """The mask treatment of an edit: `inpaint`, or the defaults when it is unset."""
        return self.inpaint or InpaintSpec()

    def pictures(self) -> tuple[str, ...]:
        """The stored pictures it reads: init image, mask, control maps, image prompts (the
        same list as data.jobs' `_JOB_PICTURES`)."""
        found = (
            self.init_image,
            self.mask_image,
            *(unit.image for unit in self.controls),
            *(one.image for one in self.image_prompts),
        )
        return tuple(dict.fromkeys(path for path in found if path))

    def with_pictures(self, moved: Mapping[str, str]) -> GenerationRequest:
        """The request reading each picture at `moved[its path]` (a remote worker's copies);
        pictures not in `moved` stay where they are."""

        def where(path: str) -> str:
            return moved.get(path, path)

        return dataclasses.replace(
            self,
            init_image=where(self.init_image) if self.init_image else self.init_image,
            mask_image=where(self.mask_image) if self.mask_image else self.mask_image,
            controls=tuple(dataclasses.replace(u, image=where(u.image)) for u in self.controls),
            image_prompts=tuple(
                dataclasses.replace(one, image=where(one.image)) for one in self.image_prompts
            ),
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GenerationRequest:
        raw: dict[str, Any] = json.loads(text)
        raw["loras"] = tuple(LoraRef(**ref) for ref in raw.get("loras", ()))
        raw["hypernets"] = tuple(HypernetRef(**ref) for ref in raw.get("hypernets", ()))
        raw["hires"] = HiresSpec(**raw["hires"]) if raw.get("hires") else None
        raw["inpaint"] = InpaintSpec(**raw["inpaint"]) if raw.get("inpaint") else None
        raw["controls"] = tuple(ControlUnit(**unit) for unit in raw.get("controls", ()))
        raw["image_prompts"] = tuple(ImagePrompt(**one) for one in raw.get("image_prompts", ()))
        raw["tiles"] = TileSpec(**raw["tiles"]) if raw.get("tiles") else None
        raw["mode"] = Mode(raw.get("mode", Mode.TXT2IMG))
        raw["extras"] = tuple(tuple(pair) for pair in raw.get("extras", ()))
        return cls(**raw)
