"""A1111 `parameters` text: the infotext every SD tool reads from a PNG, written and parsed."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import re
from dataclasses import dataclass

from pipeline.errors import UserError
from pipeline.request import GenerationRequest, Mode
from pipeline.samplers import AUTOMATIC, resolve_sampler, schedule_label

_FIELD = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@dataclass(frozen=True)
class ImageIdentity:
    """What the parameters say about where an image came from, beyond its request."""

    seed: int
    variation_seed: int | None = None
    model_name: str = ""
    model_hash: str = ""
    lora_hashes: tuple[tuple[str, str], ...] = ()
    ti_hashes: tuple[tuple[str, str], ...] = ()
    vae: tuple[str, str] | None = None
    """A replacement VAE's (file name, short hash); None for the checkpoint's own."""


def quote(value: object) -> str:
    """A1111's quoting: JSON-quote a value that holds a comma, a colon or a newline."""
    text = str(value)
    if any(mark in text for mark in ",:\n"):
        return json.dumps(text, ensure_ascii=False)
    return text


@functools.cache
def _version() -> str:
    """The installed Dreamcord's version, which A1111-style tools show as the generator."""
    try:
        return importlib.metadata.version("dreamcord")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _number(value: float) -> str:
    return f"{value:g}"


def build_parameters(request: GenerationRequest, identity: ImageIdentity) -> str:
    """The `parameters` text of one image, in A1111's field order."""
    sampler, schedule = resolve_sampler(request.sampler, request.schedule)
    fields: dict[str, object] = {
        "Steps": request.steps,
        "Sampler": sampler.name,
        "Schedule type": schedule_label(sampler, schedule),
        "CFG scale": _number(request.cfg),
        "Seed": identity.seed,
        "Size": f"{request.width}x{request.height}",
    }
    if identity.model_hash:
        fields["Model hash"] = identity.model_hash
    if identity.model_name:
        fields["Model"] = identity.model_name
    if identity.vae is not None:
        vae_name, vae_hash = identity.vae
        if vae_hash:
            fields["VAE hash"] = vae_hash
        fields["VAE"] = vae_name
    if identity.variation_seed is not None:
        fields["Variation seed"] = identity.variation_seed
        fields["Variation seed strength"] = _number(request.variation_strength)
    if request.clip_skip > 1:
        fields["Clip skip"] = request.clip_skip
    # The noise comes from CPU generators; A1111 reads a missing RNG field as GPU noise.
    fields["RNG"] = "CPU"
    if request.mode in (Mode.IMG2IMG, Mode.UPSCALE) and request.strength is not None:
        fields["Denoising strength"] = _number(request.strength)
    if request.hires is not None:
        fields["Denoising strength"] = _number(request.hires.denoise)
        fields["Hires upscale"] = _number(request.hires.scale)
        fields["Hires steps"] = request.hires.steps
        fields["Hires upscaler"] = request.hires.upscaler
    for field, hashes in (("Lora hashes", identity.lora_hashes), ("TI hashes", identity.ti_hashes)):
        if hashes:
            fields[field] = ", ".join(f"{name}: {digest}" for name, digest in hashes)
    fields.update(dict(request.extras))
    fields["Version"] = f"dreamcord {_version()}"
    line = ", ".join(f"{key}: {quote(value)}" for key, value in fields.items())
    negative = f"\nNegative prompt: {request.negative}" if request.negative else ""
    return f"{request.prompt}{negative}\n{line}"


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """Split infotext into (prompt, negative prompt, fields), unquoting quoted values."""
    lines = text.strip().split("\n")
    fields: dict[str, str] = {}
    if len(lines) > 1 and len(_FIELD.findall(lines[-1])) >= 3:
        for key, value in _FIELD.findall(lines.pop()):
            value = value.strip()
            if value.startswith('"') and value.endswith('"'):
                value = json.loads(value)
            fields[key.strip()] = value
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if negative_lines or line.startswith("Negative prompt:"):
            negative_lines.append(line.removeprefix("Negative prompt:").lstrip())
        else:
            prompt_lines.append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines), fields


def options_from_parameters(text: str) -> tuple[str, str, dict[str, int | float | str]]:
    """(prompt, negative, request options) from infotext, to make more from an earlier image."""
    prompt, negative, fields = parse_parameters(text)
    try:
        width, height = (int(side) for side in fields["Size"].split("x"))
        options: dict[str, int | float | str] = {
            "width": width,
            "height": height,
            "seed": int(fields["Seed"]),
            "steps": int(fields.get("Steps", 25)),
            "cfg": float(fields.get("CFG scale", 7)),
            "sampler": fields.get("Sampler", "Euler a"),
            "schedule": fields.get("Schedule type", AUTOMATIC),
            "clip_skip": int(fields.get("Clip skip", 1)),
        }
    except (KeyError, ValueError) as error:
        raise UserError(
            f"the image's parameters are incomplete ({error}): use a PNG made by Dreamcord, "
            "A1111, Forge or ComfyUI with its parameters kept"
        ) from None
    return _with_old_hypernet(prompt, fields), negative, options


def _with_old_hypernet(prompt: str, fields: dict[str, str]) -> str:
    """The prompt with A1111's pre-extra-networks `Hypernet` field as a tag, as A1111's own
    paste does; today's A1111 (and Dreamcord) writes only the tag in the prompt."""
    name = fields.get("Hypernet")
    if not name or "<hypernet:" in prompt.lower():
        return prompt
    return f"{prompt}<hypernet:{name}:{fields.get('Hypernet strength', '1')}>"
