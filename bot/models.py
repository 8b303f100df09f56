"""Which models the settings name, and the engine built from them."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.settings import Settings
from pipeline.errors import UserError
from pipeline.limits import MAX_CLIP_SKIP, Limits
from pipeline.memory import MemoryModel
from pipeline.models import ModelSource, resolve_model
from pipeline.upscalers import UpscalerCatalog

if TYPE_CHECKING:
    from pipeline.compiled import CompiledModels
    from pipeline.engine import Engine
    from pipeline.lora.source import FileSource

ADAPTER_CACHE_BYTES = 1024**3
"""Parsed LoRA factors kept in memory between batches: about seven rank-128 LoRAs."""


def model_sources(
    settings: Settings, override: str | None = None
) -> tuple[dict[str, ModelSource], str]:
    """All configured models by name, and the default's name.

    MODEL is the default; every `.safetensors` checkpoint and diffusers folder in MODELS_DIR is
    offered too, under its file or folder name.
    """
    default = resolve_model(override or settings.model)
    sources = {default.name: default}
    if settings.models_dir is not None and override is None:
        sources.update(_scan_models_dir(settings.models_dir))
    return sources, default.name


def _scan_models_dir(folder: Path) -> dict[str, ModelSource]:
    if not folder.is_dir():
        raise UserError(f"MODELS_DIR={folder} is not a folder: create it or unset MODELS_DIR")
    found = {}
    for entry in sorted(folder.iterdir()):
        if entry.suffix.lower() == ".safetensors" or (entry / "model_index.json").is_file():
            source = resolve_model(str(entry))
            found[source.name] = source
    return found


def build_engine(
    settings: Settings,
    model_override: str | None = None,
    libraries: tuple[FileSource, FileSource, FileSource] | None = None,
    controlnets: FileSource | None = None,
    upscalers: UpscalerCatalog | None = None,
) -> Engine:
    """The engine for these settings (imports torch and diffusers: call it off the event loop).

    `libraries` are the (LoRA, embedding, hypernetwork) libraries prompts may use, and
    `controlnets` the ControlNet library control units name; without them, none. `upscalers`
    replaces DATA_DIR/upscalers (a remote worker's are those its batches bring).
    """
    from pipeline.engine import Engine
    from pipeline.lora.cache import AdapterCache
    from pipeline.lora.source import AdapterSource
    from pipeline.models import ModelManager, choose_placement

    sources, default = model_sources(settings, model_override)
    placement = choose_placement(
        settings.device, settings.dtype, settings.memory_mode, settings.attention
    )
    adapters = None
    if libraries is not None:
        loras, embeddings, hypernetworks = libraries
        cache = AdapterCache(ADAPTER_CACHE_BYTES)
        adapters = AdapterSource(loras, embeddings, cache, hypernetworks)
    models = ModelManager(sources, default, placement, vae=settings.vae)
    memory = memory_model(settings)
    safety = None
    if settings.safety_checker != "off":
        from pipeline.safety import load_safety_checker

        safety = load_safety_checker(settings.safety_checker_model, placement)
    files = settings.image_prompt_files()
    image_prompts = None
    if files is not None:
        from pipeline.image_prompts.adapter import ImagePromptModels

        image_prompts = ImagePromptModels(files)
    return Engine(
        models,
        adapters,
        upscaler_catalog(settings) if upscalers is None else upscalers,
        safety,
        controlnets=controlnets,
        image_prompts=image_prompts,
        memory=memory,
        compiled=compiled_models(settings, placement.device, memory),
    )


def compiled_models(settings: Settings, device: str, memory: MemoryModel) -> CompiledModels | None:
    """The compiled path COMPILE asks for on this device (None: eager only).

    Its buckets are the planner's batch sizes at DEFAULT_SIZE; inductor keeps its kernels in
    DATA_DIR/inductor-cache, so a restart compiles from the cache in seconds.
    """
    from pipeline.compiled import CompiledModels, resolve_mode, row_buckets, use_compile_cache
    from pipeline.sizes import parse_size

    mode = resolve_mode(settings.compile, device)
    if mode == "off":
        return None
    use_compile_cache(str(settings.data_dir / "inductor-cache"))
    size = parse_size(settings.default_size, settings.max_pixels)
    return CompiledModels(mode, [size], row_buckets(settings.max_batch), memory.decode_batch)


MODEL_DEFAULT_KEYS = {"clip_skip": (1, MAX_CLIP_SKIP)}
"""What a model's sidecar file may set, with the allowed range of each value."""


def model_defaults(settings: Settings, name: str) -> dict[str, Any]:
    """The request defaults a model's sidecar file sets (`anything-v5.json` beside
    `anything-v5.safetensors`): what the model card asks for, such as clip skip 2.

    "default" is the MODEL setting; other names are looked up in MODELS_DIR. A model without
    a sidecar has none; a sidecar that is not valid is a UserError naming the file.
    """
    sidecar, raw = _read_sidecar(settings, name)
    defaults = {}
    for key, (low, high) in MODEL_DEFAULT_KEYS.items():
        value = raw.get(key)
        if value is None:
            continue
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise UserError(f"{sidecar}: {key} is {value!r}; use a whole number {low} to {high}")
        defaults[key] = value
    return defaults


INPAINTING_SUFFIX = "-inpainting"


def companion_of(settings: Settings, name: str, configured: Collection[str]) -> str | None:
    """The inpainting model that edits on model `name` run on, or None (use `name` itself).

    The model's sidecar may name it (`{"inpainting": "dreamshaper-inpainting"}`); otherwise
    `<name>-inpainting`, when `configured` (the names of MODEL and MODELS_DIR's models) has it.
    A sidecar naming a model that is not configured is a UserError naming the file.
    """
    sidecar, raw = _read_sidecar(settings, name)
    named = raw.get("inpainting")
    if named is not None:
        if not isinstance(named, str) or named not in configured:
            raise UserError(
                f"{sidecar}: inpainting is {named!r}, which is not a configured model; "
                "put that checkpoint in MODELS_DIR or remove the key"
            )
        return named
    base = resolve_model(settings.model).name if name == "default" else name
    conventional = f"{base}{INPAINTING_SUFFIX}"
    return conventional if conventional in configured and conventional != base else None


def _read_sidecar(settings: Settings, name: str) -> tuple[Path | None, dict[str, Any]]:
    """A model's sidecar file and its JSON object ({} without one), or a UserError."""
    sidecar = _sidecar_of(settings, name)
    if sidecar is None or not sidecar.is_file():
        return sidecar, {}
    try:
        raw = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{sidecar} is not readable JSON ({error}): fix or remove it") from None
    if not isinstance(raw, dict):
        raise UserError(f'{sidecar} must hold a JSON object such as {{"clip_skip": 2}}')
    return sidecar, raw


def _sidecar_of(settings: Settings, name: str) -> Path | None:
    if name == "default":
        path = Path(settings.model).expanduser()
    elif settings.models_dir is not None:
        path = settings.models_dir / name
        if not path.is_dir():
            path = path.with_name(f"{name}.safetensors")
    else:
        return None
    if path.is_dir():
        return path.with_name(f"{path.name}.json")
    if path.suffix.lower() == ".safetensors":
        return path.with_suffix(".json")
    return None  # tiny, sd15-random and hub ids have no file of their own


def upscaler_catalog(settings: Settings) -> UpscalerCatalog:
    """The built-in upscalers and the ESRGAN-family models installed in DATA_DIR/upscalers."""
    return UpscalerCatalog(settings.data_dir / "upscalers")


def memory_model(settings: Settings) -> MemoryModel:
    """The memory model; with image prompts configured, their term from the files' own
    parameter counts, at 2 bytes each (fp16, as on the card)."""
    files = settings.image_prompt_files()
    if files is None:
        return MemoryModel()
    parameters = files.layout.parameters + files.encoder_parameters
    return MemoryModel(image_prompt_bytes=2.0 * parameters)


def limits_of(settings: Settings) -> Limits:
    return Limits(
        max_steps=settings.max_steps,
        max_pixels=settings.max_pixels,
        max_images=settings.max_images,
        upscalers=upscaler_catalog(settings),
        image_prompts=bool(settings.ip_adapter),
        max_upscale_pixels=settings.max_upscale_pixels,
    )
