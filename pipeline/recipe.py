"""A pasted A1111 recipe ("PNG info") read as request fields, with a note for what it cannot honour.

The reading follows A1111 1.10's own paste (`parse_generation_parameters` in
`modules/infotext_utils.py` and the txt2img paste fields in `modules/ui.py`): a field that is
absent leaves the setting to the user's and the server's defaults, except the ones A1111 fills
in itself (`Clip skip` 1, `RNG` GPU, `Schedule type` Automatic, no highres fix, an empty
negative). Every field that cannot be honoured becomes a note for the user; none is dropped
silently. The files a recipe names are matched against the installed ones by
`pipeline.recipe_files`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UserError
from pipeline.infotext import parse_parameters
from pipeline.limits import (
    MAX_CLIP_SKIP,
    MAX_HIRES_SCALE,
    MAX_MASK_BLUR,
    MAX_PADDING,
    MIN_HIRES_SCALE,
    Limits,
)
from pipeline.request import (
    INPAINT_FILLS,
    MAX_SEED,
    MAX_TOKEN_MERGING,
    RNG_SOURCES,
    InpaintSpec,
)
from pipeline.samplers import AUTOMATIC, find_schedule, split_sampler_name

MAX_CHARS = 32_000
"""An A1111 infotext is a few thousand characters; a longer text is something else."""
_SIZE = re.compile(r"^(\d{1,6})x(\d{1,6})$")
_DIGEST = re.compile(r"[0-9a-f]{8,64}")
"""A short hash as tools write it: 8 (A1111's first model hash) to 64 hex digits."""
_SHOWN = 60
"""Characters of a field's value quoted in a note."""

INFORMATIONAL = frozenset({"Version", "Batch pos", "User"})
"""Fields that describe an image without setting anything, so nothing is lost by skipping them."""
NO_EFFECT = {
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Pad conds": "False",
    "Emphasis": "Original",
    "Schedule max sigma": "0",
    "Schedule min sigma": "0",
    "Schedule rho": "0",
    "Tiling": "False",
}
"""Values that ask for what Dreamcord does anyway (A1111's defaults), so they need no note."""
UNSUPPORTED = {
    "Face restoration": "faces are not restored here",
    "Seed resize from": "noise drawn at another size is not offered",
    "Token merging ratio": "token merging is not offered: full attention runs",
    "Token merging ratio hr": "token merging is not offered: full attention runs",
    "Eta": "the sampler's default eta runs",
    "Eta DDIM": "the sampler's default eta runs",
    "Pad conds": "the prompt and the negative run at their own lengths, A1111's default",
    "Hires sampler": "the hires pass uses the main sampler",
    "Hires schedule type": "the hires pass uses the main schedule type",
    "Hires CFG Scale": "the hires pass uses the main CFG scale",
    "Hires prompt": "the hires pass uses the main prompt",
    "Hires negative prompt": "the hires pass uses the main negative prompt",
    "Hires checkpoint": "the hires pass uses the main model",
    "Emphasis": "A1111's original emphasis runs",
    "Init image hash": "the picture it started from is not part of the parameters",
}
"""Fields Dreamcord cannot honour, with what runs instead; other fields get a generic note."""
HIRES_FIELDS = ("Hires upscale", "Hires resize", "Hires upscaler", "Hires steps")
INPAINT_FIELDS = ("Mask blur", "Inpaint area", "Masked area padding", "Masked content")
INPAINT_AREAS = {"whole picture": "whole", "only masked": "masked"}
"""A1111's `Inpaint area` values, as Dreamcord names them."""
INPAINT_NOTE = "applies when the recipe repaints a mask (generate --init --mask, /edit)"
CONTROL_UNIT = re.compile(r"ControlNet \d{1,2}")
"""sd-webui-controlnet's field of one unit, numbered from 0."""
CONTROL_NOTE = (
    "not taken, as the control picture is not in the text: attach the control picture with "
    "control_image (CLI: --control-image)"
)
_OPTION_OF = {
    "Steps": "steps",
    "Sampler": "sampler",
    "Schedule type": "schedule",
    "CFG scale": "cfg",
    "Seed": "seed",
    "Size": "width",
    "Clip skip": "clip_skip",
    "Batch size": "count",
    "RNG": "rng",
    "ENSD": "ensd",
    "Model": "model",
    "Model hash": "model",
    "Hires upscale": "hires_scale",
    "Hires resize": "hires_scale",
    "Hires steps": "hires_steps",
    "Hires upscaler": "hires_upscaler",
}
"""The request option each field sets: a field whose option is given with the paste is not read."""


@dataclass(frozen=True)
class FileRef:
    """A file a recipe names: its name there, and the short hash tools link it by ("" if none)."""

    name: str
    digest: str = ""


@dataclass(frozen=True)
class Recipe:
    """What a pasted infotext asks for.

    `options` is a layer of request options for `bot.requests.build_request`. `prompt` and
    `negative` are None where the paste came with its own. `strength` is the denoising strength
    of an image-to-image recipe (one without hires fields), for a caller with a picture.
    """

    prompt: str | None
    negative: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    strength: float | None = None
    inpaint: InpaintSpec | None = None
    """An inpaint recipe's mask treatment, for a caller with a mask; None without those fields."""
    model: FileRef | None = None
    lora_hashes: tuple[FileRef, ...] = ()
    ti_hashes: tuple[FileRef, ...] = ()
    vae: FileRef | None = None
    notes: tuple[str, ...] = ()


def read_recipe(text: str, limits: Limits, given: Mapping[str, Any] | None = None) -> Recipe:
    """The recipe in `text`, or a UserError that names the field to fix.

    `given` are the request options set alongside the paste (and "prompt", "negative"), None
    values left out: they win, so their fields are not read at all, and a bad value there can
    be overridden.
    """
    given = {key: value for key, value in (given or {}).items() if value is not None}
    if len(text) > MAX_CHARS:
        raise UserError(
            f"the parameters are {len(text):,} characters long; an A1111 infotext is at most a "
            f"few thousand: paste only the text A1111 shows under the image"
        )
    prompt, negative, fields = parse_parameters(text)
    if not fields and "Negative prompt:" not in text:
        raise UserError(
            "this is not A1111 parameters: paste the whole text A1111 or Civitai shows for an "
            "image, ending in a line like 'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, "
            "Size: 512x512'"
        )
    return _Reader(fields, limits, given).read(prompt, negative)


class _Reader:
    """One infotext's fields, read one by one; whatever is left at the end becomes notes."""

    def __init__(self, fields: Mapping[str, str], limits: Limits, given: Mapping[str, Any]) -> None:
        self.fields = dict(fields)
        self.size = fields.get("Size", "512x512")
        """The recipe's own size, which `Hires resize` is relative to even when overridden."""
        self.limits = limits
        self.given = given
        self.options: dict[str, Any] = {}
        self.notes: list[str] = []

    def read(self, prompt: str, negative: str) -> Recipe:
        self._basics()
        self._sampler()
        self._noise()
        self._token_merging()
        strength = self._denoising()
        inpaint = self._inpaint()
        model = self._model()
        vae = self._vae()
        prompt = self._old_hypernet(prompt)
        loras = self._hash_list("Lora hashes")
        embeddings = self._hash_list("TI hashes")
        self._controlnet()
        self._leftovers()
        return Recipe(
            prompt=None if "prompt" in self.given else prompt,
            negative=None if "negative" in self.given else negative,
            options=self.options,
            strength=strength,
            inpaint=inpaint,
            model=model,
            lora_hashes=() if "prompt" in self.given else loras,
            ti_hashes=embeddings,
            vae=vae,
            notes=tuple(dict.fromkeys(self.notes)),
        )

    # --- the fields, in A1111's order ---

    def _basics(self) -> None:
        limits = self.limits
        if (steps := self._number("Steps", int, low=1)) is not None:
            self.options["steps"] = self._at_most("Steps", steps, limits.max_steps)
        if (cfg := self._number("CFG scale", float)) is not None:
            self.options["cfg"] = self._within("CFG scale", cfg, limits.min_cfg, limits.max_cfg)
        if (seed := self._number("Seed", int)) is not None and seed < 0:
            self.notes.append(f"Seed: {seed} means a random seed, as in A1111")
        elif seed is not None:
            self.options["seed"] = self._below_max_seed("Seed", seed)
        if (size := self._take("Size")) is not None:
            self.options["width"], self.options["height"] = _size("Size", size)
        clip_skip = self._number("Clip skip", int, low=1)
        if "clip_skip" not in self.given:  # missing means 1, as A1111 reads it
            self.options["clip_skip"] = self._at_most("Clip skip", clip_skip or 1, MAX_CLIP_SKIP)
        if (count := self._number("Batch size", int, low=1)) is not None:
            self.options["count"] = self._at_most("Batch size", count, limits.max_images)

    def _sampler(self) -> None:
        """`Sampler` and `Schedule type`; an old combined name's schedule wins, as in A1111."""
        schedule = self._take("Schedule type")
        if "schedule" not in self.given:
            self.options["schedule"] = AUTOMATIC
            if schedule is not None:
                try:
                    self.options["schedule"] = find_schedule(schedule)
                except UserError:
                    self.notes.append(
                        f"Schedule type: {_shown(schedule)} is not offered here: Automatic "
                        "(the sampler's own) is used"
                    )
        name = self._take("Sampler")
        if name is None:
            return
        try:
            sampler, named = split_sampler_name(name)
        except UserError:
            self.notes.append(
                f"Sampler: {_shown(name)} is not offered here: this server's default sampler "
                "is used; choose another with the sampler option"
            )
            return
        self.options["sampler"] = sampler.name
        if "schedule" in self.given:
            return
        if named is not None:
            self.options["schedule"] = named
        if sampler.timestep_sampler and self.options["schedule"] != AUTOMATIC:
            self.notes.append(
                f"Schedule type: {sampler.name} keeps its own timesteps here, so "
                f"{self.options['schedule']} is not used"
            )
            self.options["schedule"] = AUTOMATIC

    def _noise(self) -> None:
        variation_seed = self._seed("Variation seed")
        strength = self._number("Variation seed strength", float, low=0.0)
        if strength is not None and strength > 1:
            raise UserError(_out_of_range("Variation seed strength", strength, "0 to 1"))
        if variation_seed is not None and strength:
            self.options["variation_seed"] = variation_seed
            self.options["variation_strength"] = strength
        elif variation_seed is not None or strength:
            self.notes.append(
                "a variation seed needs both Variation seed and Variation seed strength: "
                "the plain seed is used"
            )
        if (ensd := self._seed("ENSD")) is not None:
            self.options["ensd"] = ensd
        rng = self._take("RNG")
        if "rng" not in self.given:
            self.options["rng"] = "GPU"
            if rng is not None and rng.strip().upper() in RNG_SOURCES:  # a missing one: GPU
                self.options["rng"] = rng.strip().upper()
            elif rng is not None:
                self.notes.append(f"RNG: {_shown(rng)} is not one of A1111's: GPU noise is used")

    def _token_merging(self) -> None:
        """A1111's token merging ratio becomes fast mode at that ratio. Dreamcord merges alike
        in every pass, so the hires pass's own ratio is read only to say when it differs."""
        ratio = self._number("Token merging ratio", float, low=0.0)
        hires = self._number("Token merging ratio hr", float, low=0.0)
        if ratio is None:
            if hires:
                self.notes.append("Token merging ratio hr alone is not used: no token merging")
            return
        if ratio > MAX_TOKEN_MERGING:
            allowed = f"0 to {MAX_TOKEN_MERGING}"
            raise UserError(_out_of_range("Token merging ratio", ratio, allowed))
        self.options["token_merging"] = ratio
        if hires is not None and hires != ratio:
            self.notes.append(f"Token merging ratio hr: {hires:g} is not used: {ratio:g} is")

    def _denoising(self) -> float | None:
        """Highres fix, or else the img2img strength.

        A1111 turns highres fix on for a denoising strength with a Hires upscale, resize or
        upscaler field; a `hires` option given with the paste decides instead.
        """
        denoise = self._number("Denoising strength", float)
        if denoise is not None and not 0 < denoise <= 1:
            raise UserError(_out_of_range("Denoising strength", denoise, "more than 0, up to 1"))
        present = [name for name in HIRES_FIELDS if name in self.fields]
        in_recipe = denoise is not None and bool(set(present) - {"Hires steps"})
        wanted = bool(self.given["hires"]) if "hires" in self.given else in_recipe
        if "hires" not in self.given:
            self.options["hires"] = in_recipe
            if present and not in_recipe:
                self.notes.append(
                    f"{present[0]} without Denoising strength and a Hires upscale, resize or "
                    "upscaler field: A1111 leaves highres fix off, and so does Dreamcord"
                )
        if not wanted:
            for name in present:
                self.fields.pop(name)
            return None if in_recipe else denoise
        if in_recipe and "hires_denoise" not in self.given:
            self.options["hires_denoise"] = denoise
        self._hires_scale()
        steps = self._number("Hires steps", int, low=0)
        if "hires_steps" not in self.given:  # missing: as many as the first pass, as in A1111
            self.options["hires_steps"] = self._at_most(
                "Hires steps", steps or 0, self.limits.max_steps
            )
        if (upscaler := self._take("Hires upscaler")) is not None:
            self.options["hires_upscaler"] = self._upscaler(upscaler)
        return None if in_recipe else denoise

    def _inpaint(self) -> InpaintSpec | None:
        """A1111's inpaint fields, each noted: a prompt alone has no mask to use them on."""
        present = {name: self.fields[name] for name in INPAINT_FIELDS if name in self.fields}
        if not present:
            return None
        values: dict[str, Any] = {}
        if (blur := self._number("Mask blur", int, low=0)) is not None:
            values["mask_blur"] = self._at_most("Mask blur", blur, MAX_MASK_BLUR)
        if (padding := self._number("Masked area padding", int, low=0)) is not None:
            values["padding"] = self._at_most("Masked area padding", padding, MAX_PADDING)
        area = (self._take("Inpaint area") or "").strip().lower()
        content = (self._take("Masked content") or "").strip().lower()
        notes = {name: INPAINT_NOTE for name in present}
        if area:
            if area in INPAINT_AREAS:
                values["area"] = INPAINT_AREAS[area]
            else:
                notes["Inpaint area"] = "not an A1111 value: the whole picture is used"
        if content:
            if content in INPAINT_FILLS:
                values["fill"] = content
            else:
                notes["Masked content"] = "not offered here: original is used"
        for name, reason in notes.items():
            self.notes.append(f"{name}: {_shown(present[name])}: {reason}")
        return InpaintSpec(**values)

    def _hires_scale(self) -> None:
        scale = self._number("Hires upscale", float)
        resize = self._take("Hires resize")
        if resize is not None:
            scale = self._resize_scale(resize)
        if scale is None:
            return
        if not (math.isfinite(scale) and scale > 0):
            raise UserError(_out_of_range("Hires upscale", scale, "a positive scale"))
        self.options["hires_scale"] = self._within(
            "Hires upscale", scale, MIN_HIRES_SCALE, MAX_HIRES_SCALE
        )

    def _resize_scale(self, resize: str) -> float:
        """The scale A1111 upscales to before it crops to `Hires resize` (0 keeps the aspect)."""
        target_w, target_h = _size("Hires resize", resize, zero=True)
        match = _SIZE.match(self.size.strip())
        width, height = (int(match[1]), int(match[2])) if match else (512, 512)
        width, height = max(width, 1), max(height, 1)
        if target_w == target_h == 0:
            raise UserError("Hires resize: 0x0 is no size: write WxH such as 1024x1536")
        if target_h == 0 or (target_w and width / height < target_w / target_h):
            scale = target_w / width
        else:
            scale = target_h / height
        result = (round(width * scale), round(height * scale))
        if target_w and target_h and result != (target_w, target_h):
            self.notes.append(
                f"Hires resize: {resize} has another shape than Size: the result is "
                f"{result[0]}x{result[1]}, not cropped to it as in A1111"
            )
        return scale

    def _upscaler(self, name: str) -> str:
        try:
            return self.limits.upscalers.find(name).name
        except UserError:
            instead = "Latent" if name.strip().lower().startswith("latent") else "Lanczos"
            self.notes.append(
                f"Hires upscaler: {_shown(name)} is not installed: {instead} is used instead "
                "(an admin can put an ESRGAN-family .safetensors model in DATA_DIR/upscalers)"
            )
            return instead

    def _model(self) -> FileRef | None:
        name, digest = self._take("Model") or "", self._take("Model hash") or ""
        if "model" in self.given or not (name or digest):
            return None
        return FileRef(name.strip(), self._digest("Model hash", digest))

    def _vae(self) -> FileRef | None:
        """A replacement VAE, which this installation may or may not use (recipe_files)."""
        name, digest = self._take("VAE") or "", self._take("VAE hash") or ""
        if not (name or digest):
            return None
        return FileRef(name.strip(), self._digest("VAE hash", digest))

    def _old_hypernet(self, prompt: str) -> str:
        """A1111's `Hypernet` field from before extra networks becomes the tag A1111's paste
        makes (appended without a space); today's A1111 writes only the tag in the prompt."""
        name = self._take("Hypernet")
        strength = self._take("Hypernet strength") or "1"
        self._take("Hypernet hash")
        if not name or "<hypernet:" in prompt.lower():
            return prompt
        return f"{prompt}<hypernet:{name}:{strength}>"

    def _hash_list(self, name: str) -> tuple[FileRef, ...]:
        """`name: hash, name: hash`, split as A1111 splits it (commas, then the first colon)."""
        text = self._take(name)
        if text is None:
            return ()
        refs = []
        for item in text.split(","):
            label, colon, digest = item.partition(":")
            if not colon or not label.strip():
                self.notes.append(f"{name}: {_shown(item.strip())} is not 'name: hash': left out")
                continue
            refs.append(FileRef(label.strip(), self._digest(name, digest)))
        return tuple(refs)

    def _digest(self, name: str, text: str) -> str:
        """The hash in lower case; "" with a note when it is none, so the name alone counts."""
        digest = text.strip().lower()
        if digest and not _DIGEST.fullmatch(digest):
            self.notes.append(f"{name}: {_shown(text)} is not a hash: the name alone is used")
            return ""
        return digest

    def _controlnet(self) -> None:
        """sd-webui-controlnet's units, each noted with its model: the map it read is not in
        the text, so none is taken. Older versions' `ControlNet-0 Model`-style fields too."""
        for key in [key for key in self.fields if key.startswith("ControlNet")]:
            value = self.fields.pop(key)
            if CONTROL_UNIT.fullmatch(key):
                parts = dict(item.partition(": ")[::2] for item in value.split(", "))
                value = parts.get("Model", value)
            self.notes.append(f"{key}: {_shown(value)}: {CONTROL_NOTE}")

    def _leftovers(self) -> None:
        """A note for every field still unread, unless it asks for what runs anyway."""
        adetailer = [key for key in self.fields if key.startswith("ADetailer")]
        if adetailer:
            self.notes.append(
                f"ADetailer (an A1111 extension; {len(adetailer)} fields) is not run here"
            )
        for key, value in self.fields.items():
            if key in INFORMATIONAL or key in adetailer or NO_EFFECT.get(key) == value.strip():
                continue
            reason = UNSUPPORTED.get(key, "not read here")
            self.notes.append(f"{key}: {_shown(value)}: {reason}")

    # --- helpers ---

    def _take(self, name: str) -> str | None:
        """The field's text, removed from those left; None when absent or its option is given."""
        value = self.fields.pop(name, None)
        if value is None or _OPTION_OF.get(name) in self.given:
            return None
        return value

    def _number(
        self, name: str, kind: Callable[[str], Any], low: float | None = None
    ) -> Any | None:
        text = self._take(name)
        if text is None:
            return None
        try:
            value = kind(text.strip())
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise UserError(
                f"{name}: {_shown(text)} is not {what}: correct it in the pasted text, or set it "
                "with its own option"
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name}: {_shown(text)} is not a finite number: correct it")
        if low is not None and value < low:
            raise UserError(_out_of_range(name, value, f"{low:g} or more"))
        return value

    def _seed(self, name: str) -> int | None:
        seed = self._number(name, int, low=0)
        return None if seed is None else self._below_max_seed(name, seed)

    def _below_max_seed(self, name: str, seed: int) -> int:
        """Image i draws from seed + i, so the top of the range leaves room for a batch."""
        high = MAX_SEED - self.limits.max_images
        if seed > high:
            raise UserError(_out_of_range(name, seed, f"0 to {high}"))
        return seed

    def _at_most(self, name: str, value: int, high: int) -> int:
        if value <= high:
            return value
        self.notes.append(
            f"{name}: {_number_text(value)} is over this server's limit: {high} is used"
        )
        return high

    def _within(self, name: str, value: float, low: float, high: float) -> float:
        if low <= value <= high:
            return value
        used = min(max(value, low), high)
        self.notes.append(
            f"{name}: {value:g} is outside {low:g} to {high:g} here: {used:g} is used"
        )
        return used


def _size(name: str, text: str, zero: bool = False) -> tuple[int, int]:
    match = _SIZE.match(text.strip())
    if match is None:
        raise UserError(f"{name}: {_shown(text)} is not WxH such as 512x768")
    width, height = int(match[1]), int(match[2])
    if not zero and (width == 0 or height == 0):
        raise UserError(f"{name}: {text.strip()} must have two positive sides, such as 512x768")
    return width, height


def _out_of_range(name: str, value: float, allowed: str) -> str:
    return (
        f"{name}: {_number_text(value)} is out of range: use {allowed}; correct it or set it "
        "with its own option"
    )


def _number_text(value: float) -> str:
    """`value` for a message; a pasted whole number can be too long for float formatting."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _shown(value: str) -> str:
    text = value.strip()
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…")
