"""A1111 `parameters` text: the infotext every SD tool reads from a PNG, written and parsed."""

from __future__ import annotations

import functools
import importlib.metadata
import itertools
import json
import re
from dataclasses import dataclass

from pipeline.limits import find_rng
from pipeline.request import DEFAULT_STRENGTH, EDIT_MODES, GenerationRequest, Mode
from pipeline.samplers import resolve_sampler, schedule_label

_FIELD = re.compile(r'\s*(\w[\w \-/]{0,63}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
"""A1111's `Key: value` pattern, with keys bounded (its longest is under 40 characters) so
reading a long text that is not an infotext stays linear."""
_STEPS = re.compile(r"Steps:")
"""A1111 writes `Steps` first, so it marks where the fields of a one-line paste begin."""
_STEPS_TRIED = 4
"""A prompt may mention `Steps: 3` itself; a few candidates are enough, and bound the work."""
_NEGATIVE = "Negative prompt:"


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
    control_hashes: tuple[tuple[str, str], ...] = ()
    """Each ControlNet unit's (model name, A1111's 8-digit legacy hash), in unit order."""
    image_prompt_model: tuple[str, str] | None = None
    """The IP-Adapter's (file name, short hash) when the request has image prompts."""


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
    if request.ensd and sampler.ancestral:  # A1111 names ENSD where it changes the image
        fields["ENSD"] = request.ensd
    if request.token_merging:  # fast mode: tomesd, applied to every pass
        fields["Token merging ratio"] = _number(request.token_merging)
        if request.hires is not None:
            fields["Token merging ratio hr"] = _number(request.token_merging)
    rng = find_rng(request.rng)
    if rng != "GPU":  # as A1111 writes it: a missing RNG field means GPU noise
        fields["RNG"] = rng
    if request.mode in (Mode.IMG2IMG, Mode.UPSCALE) and request.strength is not None:
        fields["Denoising strength"] = _number(request.strength)
    if request.mode in EDIT_MODES:
        fields.update(_edit_fields(request))
    if request.hires is not None:
        fields["Denoising strength"] = _number(request.hires.denoise)
        fields["Hires upscale"] = _number(request.hires.scale)
        fields["Hires steps"] = request.hires.steps
        fields["Hires upscaler"] = request.hires.upscaler
    fields.update(_control_fields(request, identity.control_hashes))
    fields.update(_image_prompt_fields(request, identity))
    for field, hashes in (("Lora hashes", identity.lora_hashes), ("TI hashes", identity.ti_hashes)):
        if hashes:
            fields[field] = ", ".join(f"{name}: {digest}" for name, digest in hashes)
    fields.update(dict(request.extras))
    fields["Version"] = f"dreamcord {_version()}"
    line = ", ".join(f"{key}: {quote(value)}" for key, value in fields.items())
    negative = f"\nNegative prompt: {request.negative}" if request.negative else ""
    return f"{request.prompt}{negative}\n{line}"


CONTROL_MODULES = {"invert": "invert (from white bg & black line)", "depth": "depth_midas"}
"""sd-webui-controlnet's labels for preprocessors whose label is not their name."""
CONTROL_SLIDERS = {
    "none": (512, 0.5, 0.5),
    "canny": (512, 100, 200),
    "invert": (0.5, 0.5, 0.5),
    "depth": (512, 0.5, 0.5),
}
"""(Processor Res, Threshold A, Threshold B) that sd-webui-controlnet's unit validation gives a
unit left at its defaults: each preprocessor's slider values (a hidden slider's is 0.5)."""


def _control_fields(
    request: GenerationRequest, hashes: tuple[tuple[str, str], ...]
) -> dict[str, object]:
    """sd-webui-controlnet's `ControlNet N` fields of the ControlNet units, numbered from 0."""
    fields: dict[str, object] = {}
    for index, (unit, (name, digest)) in enumerate(zip(request.controls, hashes, strict=True)):
        module = CONTROL_MODULES.get(unit.preprocessor, unit.preprocessor)
        sliders = CONTROL_SLIDERS[unit.preprocessor]
        fields[f"ControlNet {index}"] = _unit_text(
            module, name, digest, unit.weight, (unit.start, unit.end), sliders
        )
    return fields


def _unit_text(
    module: str,
    name: str,
    digest: str,
    weight: float,
    steps: tuple[float, float],
    sliders: tuple[float, float, float],
) -> str:
    """One unit serialised as `ControlNetUnit.serialize` does (its `infotext_fields`, Python's
    str of each value)."""
    resolution, low, high = sliders
    values = {
        "Module": module,
        # The extension writes nothing for a unit whose values hold "," or ":".
        "Model": f"{name.replace(',', '').replace(':', '')} [{digest}]",
        "Weight": float(weight),
        "Resize Mode": "Crop and Resize",
        "Processor Res": resolution,
        "Threshold A": low,
        "Threshold B": high,
        "Guidance Start": float(steps[0]),
        "Guidance End": float(steps[1]),
        "Pixel Perfect": False,
        "Control Mode": "Balanced",
    }
    return ", ".join(f"{key}: {value}" for key, value in values.items())


IP_ADAPTER_MODULE = "ip-adapter_clip_sd15"
"""The preprocessor A1111's ControlNet extension names for SD1.5 IP-Adapters (CLIP ViT-H); it
has no sliders, so each reads the hidden 0.5."""


def _image_prompt_fields(request: GenerationRequest, identity: ImageIdentity) -> dict[str, str]:
    """Each image prompt as A1111's ControlNet extension writes an ip-adapter unit, numbered
    after the ControlNet units; style references are listed in Dreamcord's `Style reference`
    field, since A1111 records its style weighting nowhere in the unit."""
    if not request.image_prompts or identity.image_prompt_model is None:
        return {}
    name, digest = identity.image_prompt_model
    fields = {}
    styles = []
    for number, prompt in enumerate(request.image_prompts, start=len(request.controls)):
        fields[f"ControlNet {number}"] = _unit_text(
            IP_ADAPTER_MODULE, name, digest, prompt.weight, (0.0, 1.0), (0.5, 0.5, 0.5)
        )
        if prompt.style:
            styles.append(f"ControlNet {number}")
    if styles:
        fields["Style reference"] = ", ".join(styles)
    return fields


INPAINT_AREA_LABEL = "Only masked"
"""A1111's `Inpaint area` value for "only masked"; it writes no field for the whole picture."""


def _edit_fields(request: GenerationRequest) -> dict[str, object]:
    """A1111's inpaint fields where and in the order A1111 writes them: the strength, the blur
    when there is one, area and padding only for "only masked"; then the fill unless it is
    "original" (Dreamcord's fill names are A1111's `Masked content` values)."""
    spec = request.inpaint_spec
    fields: dict[str, object] = {
        "Denoising strength": _number(request.strength or DEFAULT_STRENGTH)
    }
    if spec.mask_blur:
        fields["Mask blur"] = spec.mask_blur
    if spec.area == "masked":
        fields["Inpaint area"] = INPAINT_AREA_LABEL
        fields["Masked area padding"] = spec.padding
    if spec.fill != "original":
        fields["Masked content"] = spec.fill
    return fields


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """Split infotext into (prompt, negative prompt, fields), unquoting quoted values.

    A1111's rule: the last line holds the fields when at least three `Key: value` pairs read
    from it, and the negative starts at a line beginning `Negative prompt:`. Discord's string
    options carry no newlines, so a pasted infotext may arrive as one line; then the fields
    start at the first `Steps:` that three pairs read from, and the negative at the first
    `Negative prompt:`.
    """
    lines = text.strip().replace("\r\n", "\n").split("\n")
    last = lines[-1]
    if len(lines) > 1 and not last.startswith(_NEGATIVE) and len(_FIELD.findall(last)) >= 3:
        return (*_split_negative(lines[:-1]), _fields(last))
    flat = " ".join(lines)
    for match in itertools.islice(_STEPS.finditer(flat), _STEPS_TRIED):
        if len(_FIELD.findall(flat, match.start())) >= 3:
            head, negative = _split_flat_negative(flat[: match.start()])
            return head, negative, _fields(flat[match.start() :])
    if len(lines) == 1:
        return (*_split_flat_negative(flat), {})
    return (*_split_negative(lines), {})


def looks_like_infotext(text: str) -> bool:
    """Whether a prompt is really a pasted infotext: a negative marker or a fields line."""
    return _NEGATIVE in text or bool(parse_parameters(text)[2])


def _fields(line: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(line):
        fields[key.strip()] = _unquote(value.strip())
    return fields


def _unquote(value: str) -> str:
    """A JSON-quoted value's text; a value that only looks quoted stays as it is, as in A1111."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            unquoted = json.loads(value)
        except ValueError:
            return value
        return unquoted if isinstance(unquoted, str) else value
    return value


def _split_negative(lines: list[str]) -> tuple[str, str]:
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        line = line.strip()
        if negative_lines or line.startswith(_NEGATIVE):
            negative_lines.append(line.removeprefix(_NEGATIVE).strip())
        else:
            prompt_lines.append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines)


def _split_flat_negative(text: str) -> tuple[str, str]:
    head, marker, negative = text.partition(_NEGATIVE)
    return head.strip(), negative.strip() if marker else ""
