"""Limits on what one request may ask for, checked the same way for the CLI and Discord."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from pipeline.errors import UserError
from pipeline.image_prompts.files import NOT_CONFIGURED
from pipeline.request import (
    CONTROL_PREPROCESSORS,
    EDIT_MODES,
    FAST_TOKEN_MERGING,
    INPAINT_AREAS,
    INPAINT_FILLS,
    MAX_CONTROL_UNITS,
    MAX_IMAGE_PROMPTS,
    MAX_SEED,
    MAX_TOKEN_MERGING,
    RNG_SOURCES,
    GenerationRequest,
    HiresSpec,
    InpaintSpec,
    Mode,
    TileSpec,
)
from pipeline.samplers import resolve_sampler
from pipeline.sizes import check_size, fit_size
from pipeline.upscalers import UpscalerCatalog

MAX_CLIP_SKIP = 4
MIN_HIRES_SCALE = 1.0
MAX_HIRES_SCALE = 2.0
MAX_ENSD = MAX_SEED
"""So that seed + ENSD stays a valid seed for every noise source."""
MAX_MASK_BLUR = 64
MAX_PADDING = 256
"""A1111's sliders stop at 64 (mask blur) and 256 (masked area padding)."""
MAX_GUIDE_WEIGHT = 2.0
"""A1111's ControlNet weight slider stops at 2; image prompt weights share the bound."""
MIN_TILE = 256
TILE_MULTIPLE = 64
"""Tile sides: multiples of 64 (the UNet halves a latent tile three times), from 256 up, since
smaller tiles give the model too little of the picture to draw from."""
MAX_TILE_BATCH = 16


@dataclass(frozen=True)
class Limits:
    max_steps: int = 60
    max_pixels: int = 1024 * 1024
    max_images: int = 4
    min_cfg: float = 1.0
    max_cfg: float = 30.0
    upscalers: UpscalerCatalog = field(default_factory=UpscalerCatalog)
    """The highres-fix upscalers a request may name: the built-ins and the installed models."""
    image_prompts: bool = False
    """Whether an IP-Adapter is configured, so requests may carry image prompts."""
    max_upscale_pixels: int = 4096 * 4096
    """The largest output of a tiled upscale (MAX_UPSCALE_PIXELS)."""


def check_request(request: GenerationRequest, limits: Limits) -> GenerationRequest:
    """The request with its sampler, schedule and RNG normalised, or a UserError saying what
    to fix."""
    if request.tiles is not None:
        check_tiles(request, limits)
    else:
        # An upscale may reach 4x the side (16x the pixels) of a base image at the limit.
        pixels = limits.max_pixels * (16 if request.mode is Mode.UPSCALE else 1)
        check_size(request.width, request.height, pixels)
    if not 1 <= request.steps <= limits.max_steps:
        raise UserError(f"steps {request.steps} is out of range: use 1 to {limits.max_steps}")
    if not 1 <= request.count <= limits.max_images:
        raise UserError(f"count {request.count} is out of range: use 1 to {limits.max_images}")
    if not (math.isfinite(request.cfg) and limits.min_cfg <= request.cfg <= limits.max_cfg):
        raise UserError(
            f"cfg {request.cfg:g} is out of range: use {limits.min_cfg:g} to {limits.max_cfg:g}"
        )
    if not 1 <= request.clip_skip <= MAX_CLIP_SKIP:
        raise UserError(f"clip skip {request.clip_skip} is out of range: use 1 to {MAX_CLIP_SKIP}")
    if not 0 <= request.seed <= MAX_SEED - request.count:
        raise UserError(f"seed {request.seed} is out of range: use 0 to {MAX_SEED - 16}")
    if request.strength is not None and not 0 < request.strength <= 1:
        raise UserError(f"strength {request.strength:g} is out of range: use more than 0, up to 1")
    if not 0 <= request.variation_strength <= 1:
        raise UserError(
            f"variation strength {request.variation_strength:g} is out of range: use 0 to 1"
        )
    merging = request.token_merging
    if not (math.isfinite(merging) and 0 <= merging <= MAX_TOKEN_MERGING):
        raise UserError(
            f"token merging ratio {merging:g} is out of range: use 0 (off) to "
            f"{MAX_TOKEN_MERGING:g}, or --fast for {FAST_TOKEN_MERGING:g}"
        )
    check_controls(request)
    check_image_prompts(request)
    if request.image_prompts and not limits.image_prompts:
        raise UserError(NOT_CONFIGURED)
    hires = request.hires and check_hires(request, limits)
    inpaint = check_edit(request) if request.mode in EDIT_MODES else request.inpaint
    sampler, schedule = resolve_sampler(request.sampler, request.schedule)
    checked = replace(
        request,
        sampler=sampler.name,
        schedule=schedule,
        hires=hires,
        inpaint=inpaint,
        rng=find_rng(request.rng),
        ensd=parse_ensd(request.ensd),
    )
    # Imported here: the prompt language's flags read this module's bounds.
    from pipeline.prompt.schedule import plan_conditioning

    plan_conditioning(checked)  # AND parts and edit schedules within their limits
    return checked


def check_tiles(request: GenerationRequest, limits: Limits) -> None:
    """A tiled upscale's tiles and output size within bounds, or a UserError saying what to fix."""
    tiles = request.tiles
    assert tiles is not None
    if request.mode is not Mode.UPSCALE or request.hires is not None:
        raise UserError("tiles are for upscales of an image, without highres fix: use --upscale")
    # ControlNet maps are cropped to each tile (pipeline/tiled.py); an image prompt describes
    # the whole picture, and every tile would draw all of it.
    if request.image_prompts:
        raise UserError(
            "image prompts do not work with tiled upscales (each tile would draw the whole "
            "picture): upscale without them"
        )
    check_tile_spec(tiles)
    check_size(request.width, request.height, request.width * request.height)
    if request.width * request.height > limits.max_upscale_pixels:
        width, height = fit_size(request.width, request.height, limits.max_upscale_pixels)
        raise UserError(
            f"an upscale to {request.width}x{request.height} is over this server's limit of "
            f"{limits.max_upscale_pixels:,} pixels: the largest allowed is {width}x{height}, "
            "so use a smaller factor or start from a smaller image"
        )


def check_tile_spec(tiles: TileSpec) -> None:
    """A tile side, overlap and batch the tiled pass can run, or a UserError saying what to fix
    (for requests and for a server's `/policy set upscale_tile`)."""
    if tiles.size < MIN_TILE or tiles.size % TILE_MULTIPLE:
        raise UserError(
            f"tile size {tiles.size} is not allowed: use a multiple of {TILE_MULTIPLE} from "
            f"{MIN_TILE} up (512, the model's own size, is best)"
        )
    if not 0 <= tiles.overlap < tiles.size / 2 or tiles.overlap % 8:
        raise UserError(
            f"overlap {tiles.overlap} is not allowed: use a multiple of 8 smaller than half "
            f"the tile ({tiles.size // 2}), say {TileSpec.overlap}"
        )
    if not 1 <= tiles.batch <= MAX_TILE_BATCH:
        raise UserError(f"tile batch {tiles.batch} is out of range: use 1 to {MAX_TILE_BATCH}")


def check_controls(request: GenerationRequest) -> None:
    """ControlNet units within A1111's bounds, or a UserError naming the unit to fix."""
    if len(request.controls) > MAX_CONTROL_UNITS:
        raise UserError(
            f"{len(request.controls)} ControlNet units asked for: use at most {MAX_CONTROL_UNITS}"
        )
    for number, unit in enumerate(request.controls, start=1):
        which = f"ControlNet unit {number} ({unit.model})"
        _check_weight(unit.weight, which)
        if not (0 <= unit.start < 1 and 0 < unit.end <= 1 and unit.start < unit.end):
            raise UserError(
                f"{which}: start {unit.start:g} and end {unit.end:g} must be fractions of the "
                "steps from 0 to 1, the start before the end (say 0 and 1: every step)"
            )
        if unit.preprocessor not in CONTROL_PREPROCESSORS:
            choices = ", ".join(CONTROL_PREPROCESSORS)
            raise UserError(f"{which}: unknown preprocessor {unit.preprocessor!r}: use {choices}")


def check_image_prompts(request: GenerationRequest) -> None:
    """Image prompts within bounds, or a UserError saying which to fix."""
    if len(request.image_prompts) > MAX_IMAGE_PROMPTS:
        raise UserError(
            f"{len(request.image_prompts)} image prompts given: use at most {MAX_IMAGE_PROMPTS}"
        )
    for number, prompt in enumerate(request.image_prompts, start=1):
        _check_weight(prompt.weight, f"image prompt {number}")


def _check_weight(weight: float, which: str) -> None:
    if not (math.isfinite(weight) and 0 <= weight <= MAX_GUIDE_WEIGHT):
        raise UserError(
            f"{which}: weight {weight:g} is out of range: use 0 to {MAX_GUIDE_WEIGHT:g}"
        )


def find_rng(name: str) -> str:
    """The RNG source called `name` (case-insensitive: cpu, gpu, nv), or a UserError."""
    for source in RNG_SOURCES:
        if name.strip().upper() == source:
            return source
    raise UserError(
        f"unknown RNG {name!r}: use CPU (Dreamcord's default), GPU (A1111's default, which a "
        "pasted recipe without an RNG field means) or NV (GPU noise made on any machine)"
    )


def parse_ensd(value: object) -> int:
    """A1111's eta noise seed delta as a whole number from 0 to MAX_ENSD, or a UserError."""
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"-?\d+", text):
        raise UserError(f"ENSD {text!r} is not a whole number: use 0 (none) or, say, 31337")
    ensd = int(text)
    if not 0 <= ensd <= MAX_ENSD:
        raise UserError(f"ENSD {ensd} is out of range: use 0 to {MAX_ENSD}")
    return ensd


def check_edit(request: GenerationRequest) -> InpaintSpec:
    """An edit's mask treatment with its names normalised (defaults when unset), or a
    UserError: an edit needs its picture and mask, and takes no highres fix. An outpaint's
    mask is not blurred, so the picture it grows from stays exactly as it was."""
    if request.init_image is None or request.mask_image is None:
        raise UserError(f"an {request.mode} edit needs a picture and a mask: give both")
    if request.hires is not None:
        raise UserError("highres fix does not apply to edits: upscale the result afterwards")
    spec = request.inpaint_spec
    if not 0 <= spec.mask_blur <= MAX_MASK_BLUR:
        raise UserError(f"mask blur {spec.mask_blur} is out of range: use 0 to {MAX_MASK_BLUR}")
    if not 0 <= spec.padding <= MAX_PADDING:
        raise UserError(f"padding {spec.padding} is out of range: use 0 to {MAX_PADDING} pixels")
    return replace(
        spec,
        # An outpaint keeps its picture's pixels exactly: a blur would reach into them.
        mask_blur=0 if request.mode is Mode.OUTPAINT else spec.mask_blur,
        area=_one_of("inpaint area", spec.area, INPAINT_AREAS),
        fill=_one_of("fill", spec.fill, INPAINT_FILLS),
    )


def _one_of(what: str, value: str, choices: tuple[str, ...]) -> str:
    """`value` as one of `choices`, in any letter case, or a UserError listing them."""
    for choice in choices:
        if value.strip().lower() == choice:
            return choice
    raise UserError(f"unknown {what} {value!r}: use {' or '.join(choices)}")


def check_hires(request: GenerationRequest, limits: Limits) -> HiresSpec:
    """The request's highres fix with its upscaler name normalised, or a UserError."""
    assert request.hires is not None
    hires = request.hires
    if not (math.isfinite(hires.scale) and MIN_HIRES_SCALE <= hires.scale <= MAX_HIRES_SCALE):
        raise UserError(
            f"hires scale {hires.scale:g} is out of range: use {MIN_HIRES_SCALE:g} to "
            f"{MAX_HIRES_SCALE:g}"
        )
    if not 0 <= hires.steps <= limits.max_steps:
        raise UserError(
            f"hires steps {hires.steps} is out of range: "
            f"use 0 (same as steps) to {limits.max_steps}"
        )
    if not (math.isfinite(hires.denoise) and 0 < hires.denoise <= 1):
        raise UserError(f"denoise {hires.denoise:g} is out of range: use more than 0, up to 1")
    pixels = request.width * request.height * hires.scale**2
    if pixels > limits.max_pixels * MAX_HIRES_SCALE**2:
        raise UserError(
            f"highres fix of {request.width}x{request.height} at {hires.scale:g}x is too large: "
            "start from a smaller size or a lower scale"
        )
    return replace(hires, upscaler=limits.upscalers.find(hires.upscaler).name)
