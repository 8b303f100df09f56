"""From what a user typed to a `GenerationRequest`: the prompt language plus defaults.

Precedence, highest first: explicit options (slash-command options, CLI flags), flags inside
the prompt (`--ar 3:2`), a pasted A1111 recipe (`bot.recipes`), the user's saved defaults, the
model's own (`bot.models.model_defaults`), the server's defaults, then `.env`.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.models import model_defaults, upscaler_catalog
from bot.settings import Settings
from pipeline.errors import UserError
from pipeline.limits import parse_ensd
from pipeline.prompt.limits import PromptLimits
from pipeline.prompt.options import merge_options
from pipeline.prompt.parse import parse_prompt
from pipeline.request import (
    FAST_TOKEN_MERGING,
    GenerationRequest,
    HiresSpec,
    ImagePrompt,
    LoraRef,
)
from pipeline.samplers import AUTOMATIC
from pipeline.sizes import parse_size
from pipeline.upscalers import UpscalerCatalog

REQUEST_FIELDS = (
    "width",
    "height",
    "steps",
    "cfg",
    "sampler",
    "schedule",
    "seed",
    "count",
    "clip_skip",
    "rng",
    "ensd",
    "model",
)
"""Request fields a saved layer may set; "model" is a name from `bot.models.model_sources`."""
HIRES_FIELDS = ("hires_scale", "hires_steps", "hires_denoise", "hires_upscaler")
"""Highres-fix settings any layer may set; they apply when highres fix is on."""


@dataclass(frozen=True)
class Built:
    request: GenerationRequest
    warnings: tuple[str, ...]
    image_weight: float | None = None
    """The prompt's `--iw`, as Dreamcord's image prompt weight; None when not given."""
    sref: str | None = None
    """The prompt's `--sref` value (an earlier image), for the bot to find."""


NO_IMAGE_FOR_IW = (
    "--iw sets an image prompt's weight: give an image prompt too (the image_prompt option, "
    "or /blend)"
)


def with_image_prompts(
    built: Built,
    pictures: Sequence[tuple[str, float | None]],
    styles: Sequence[str] = (),
) -> GenerationRequest:
    """The built request with its image prompts: `pictures` are (stored path, weight) content
    pictures, a weight of None taking the prompt's `--iw` (else 1); `styles` are style
    references at weight 1."""
    if built.image_weight is not None and not pictures:
        raise UserError(NO_IMAGE_FOR_IW)
    default = 1.0 if built.image_weight is None else built.image_weight
    prompts = [
        ImagePrompt(path, default if weight is None else weight) for path, weight in pictures
    ]
    prompts += [ImagePrompt(path, 1.0, style=True) for path in styles]
    return replace(built.request, image_prompts=tuple(prompts))


def prompt_limits(settings: Settings) -> PromptLimits:
    return PromptLimits(
        max_steps=settings.max_steps,
        max_images=settings.max_images,
        max_pixels=settings.max_pixels,
    )


def settings_defaults(settings: Settings) -> dict[str, Any]:
    width, height = settings.default_width_height
    return {
        "width": width,
        "height": height,
        "steps": settings.default_steps,
        "cfg": settings.default_cfg,
        "sampler": settings.default_sampler,
        "count": settings.default_count,
        "rng": settings.rng,
        "ensd": settings.ensd,
    }


def saved_defaults(saved: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """User or server defaults as stored (`size` as text) turned into request fields."""
    fields = {key: saved[key] for key in (*REQUEST_FIELDS, "hires", *HIRES_FIELDS) if key in saved}
    if isinstance(saved.get("size"), str):
        fields["width"], fields["height"] = parse_size(saved["size"], settings.max_pixels)
    return fields


def build_request(
    text: str,
    settings: Settings,
    *,
    negative: str | None = None,
    explicit: Mapping[str, Any] | None = None,
    user: Mapping[str, Any] | None = None,
    server: Mapping[str, Any] | None = None,
    known_loras: Collection[str] = (),
    known_embeddings: Collection[str] = (),
    known_hypernets: Collection[str] = (),
    extra_loras: tuple[LoraRef, ...] = (),
    pasted: Mapping[str, Any] | None = None,
) -> Built:
    """Parse the prompt and merge every layer of options; a UserError lists what to fix.

    `pasted` is a recipe's options (`Recipe.options`): besides the saved-layer fields it may
    set the noise fields `rng`, `ensd`, `variation_seed` and `variation_strength`.
    """
    if negative is None:
        saved = [layer.get("negative") for layer in (user or {}, server or {})]
        negative = next((text for text in saved if text is not None), settings.default_negative)
    parsed = parse_prompt(
        text,
        negative,
        known_loras=known_loras,
        known_embeddings=known_embeddings,
        known_hypernets=known_hypernets,
        limits=prompt_limits(settings),
    )
    parsed.raise_if_errors()
    layers = {
        "explicit": explicit or {},
        "flags": parsed.flags,
        "pasted": pasted or {},
        "user": saved_defaults(user or {}, settings),
        "server": {**settings_defaults(settings), **saved_defaults(server or {}, settings)},
    }
    # The model decides its own defaults' layer, so it is found first.
    model_name = str(merge_options(**layers).get("model") or "default")
    merged = merge_options(**layers, model=model_defaults(settings, model_name))
    hires = hires_spec(merged, explicit or {}, upscaler_catalog(settings))
    loras = (*parsed.loras, *extra_loras)
    # The tags stay in the stored prompt, as A1111 writes them in its infotext (it has no
    # hypernetwork field since its extra networks came), so a pasted prompt reproduces the image.
    tags = "".join(f" <lora:{ref.name}:{ref.te_weight:g}:{ref.unet_weight:g}>" for ref in loras)
    tags += "".join(f" <hypernet:{ref.name}:{ref.strength:g}>" for ref in parsed.hypernets)
    request = GenerationRequest(
        prompt=parsed.prompt.strip() + tags,
        negative=parsed.negative,
        width=int(merged["width"]),
        height=int(merged["height"]),
        steps=int(merged["steps"]),
        cfg=float(merged["cfg"]),
        sampler=str(merged["sampler"]),
        schedule=str(merged.get("schedule") or AUTOMATIC),
        seed=int(merged["seed"]) if merged.get("seed") is not None else random_seed(),
        count=int(merged["count"]),
        clip_skip=int(merged.get("clip_skip", 1)),
        rng=str(merged.get("rng") or GenerationRequest.rng),
        ensd=parse_ensd(merged.get("ensd") or 0),
        variation_seed=merged.get("variation_seed"),
        variation_strength=float(merged.get("variation_strength") or 0.0),
        model=model_name,
        loras=loras,
        hypernets=parsed.hypernets,
        hires=hires,
        token_merging=FAST_TOKEN_MERGING
        if merged.get("fast")
        else float(merged.get("token_merging") or 0.0),
    )
    return Built(
        request,
        parsed.warnings,
        parsed.flags.get("image_weight"),
        parsed.flags.get("sref"),
    )


def hires_spec(
    merged: Mapping[str, Any], explicit: Mapping[str, Any], upscalers: UpscalerCatalog
) -> HiresSpec | None:
    """Highres fix from the merged layers, or None when it is off.

    It is on when the winning layer says `hires`, or when a hires setting is given as an
    explicit option (asking for a hires scale means asking for highres fix) and `hires` is not
    explicitly off. The denoise defaults to the upscaler's own, as in the CLI.
    """
    switch = explicit.get("hires")
    if switch is None:
        given = any(explicit.get(key) is not None for key in HIRES_FIELDS)
        switch = given or bool(merged.get("hires"))
    if not switch:
        return None
    upscaler = upscalers.find(str(merged.get("hires_upscaler") or HiresSpec.upscaler))
    denoise = merged.get("hires_denoise")
    return HiresSpec(
        scale=float(merged.get("hires_scale", HiresSpec.scale)),
        steps=int(merged.get("hires_steps", HiresSpec.steps)),
        denoise=upscaler.default_denoise if denoise is None else float(denoise),
        upscaler=upscaler.name,
    )


def random_seed() -> int:
    """A fresh seed in A1111's range, so it can be typed back into any SD tool."""
    return secrets.randbelow(2**32)
