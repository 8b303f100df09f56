"""Midjourney-style flags after a prompt: `--ar 3:2 --seed 7 --no text, watermark`.

Each flag takes one word as its value, except `--no`, which takes everything up to the next flag
(it is added to the negative prompt), and the switches `--hires` and `--fast`, which take none.
Words after a value stay in the prompt. An em dash counts as `--`, because phones turn `--` into
`—`. Values are checked against the limits and become request fields: width, height, seed,
steps, cfg, count, clip skip, hires, fast mode. `--iw` (the image prompt's weight) and `--sref`
(an earlier image as a style reference) are read here and applied by the bot, which holds the
pictures.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserError
from pipeline.limits import MAX_CLIP_SKIP
from pipeline.prompt.limits import PromptLimits
from pipeline.request import MAX_SEED
from pipeline.sizes import parse_size

FLAGS = (
    "ar",
    "size",
    "no",
    "seed",
    "steps",
    "cfg",
    "count",
    "clip-skip",
    "hires",
    "iw",
    "sref",
    "fast",
)
SWITCHES = ("hires", "fast")
"""Flags without a value: `--hires` (highres fix), `--fast` (a draft with token merging)."""
_ALIASES = {"aspect": "ar"}
_EXAMPLES = {
    "ar": "--ar 3:2",
    "size": "--size 512x768",
    "seed": "--seed 1234",
    "steps": "--steps 30",
    "cfg": "--cfg 7",
    "count": "--count 2",
    "clip-skip": "--clip-skip 2",
    "iw": "--iw 1.5",
    "sref": "--sref 123 (an image id from /history)",
}
MAX_MIDJOURNEY_IW = 3.0
"""Midjourney's --iw runs from 0 to 3 (V6 and V7), 1 by default; Dreamcord's image weights run
from 0 to 2 (A1111's ControlNet slider), so 0-1 is kept and 1-3 is halved onto 1-2."""
_FLAG = re.compile(r"(?<!\S)(?:--|—)([A-Za-z][\w-]*)")
_WHOLE = re.compile(r"[0-9]{1,20}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,20}\.?[0-9]{0,20}|\.[0-9]{1,20})")


@dataclass(frozen=True)
class FlagScan:
    """The prompt without its flags, the `--no` texts, the request fields set, and the errors."""

    text: str
    no: tuple[str, ...]
    values: dict[str, Any]
    errors: tuple[str, ...]


def extract_flags(text: str, limits: PromptLimits) -> FlagScan:
    """Cut the flags out of `text` and read their values; a text without flags comes back as is."""
    matches = list(_FLAG.finditer(text))
    if not matches:
        return FlagScan(text, (), {}, ())
    kept = [text[: matches[0].start()]]
    no: list[str] = []
    values: dict[str, Any] = {}
    errors: list[str] = []
    seen: set[str] = set()
    ends = [match.start() for match in matches[1:]] + [len(text)]
    for match, end in zip(matches, ends, strict=True):
        name = _ALIASES.get(match[1].lower(), match[1].lower())
        tail = text[match.end() : end]
        if name not in FLAGS:
            errors.append(_unknown_flag(match[0]))
            kept.append(tail)
        elif name == "no":
            if tail.strip():
                no.append(tail.strip())
            else:
                errors.append("--no needs text after it: write for example --no text, watermark")
        elif name in seen:
            errors.append(f"--{name} is given twice: keep one")
        elif name in SWITCHES:
            values[name] = True
            kept.append(tail)
        elif not (words := tail.split(maxsplit=1)):
            errors.append(f"--{name} needs a value: write for example {_EXAMPLES[name]}")
        else:
            kept.append(words[1] if len(words) > 1 else "")
            try:
                values.update(_read_value(name, words[0].rstrip(",;"), limits))
            except UserError as error:
                errors.append(str(error))
        seen.add(name)
    if {"ar", "size"} <= seen:
        errors.append("--ar and --size both set the size: keep one")
    prompt = " ".join(part.strip() for part in kept if part.strip())
    return FlagScan(prompt, tuple(no), values, tuple(errors))


def _read_value(name: str, value: str, limits: PromptLimits) -> dict[str, Any]:
    """The request fields one flag sets, or a UserError saying which values are allowed."""
    if name in ("ar", "size"):
        if name == "ar" and ":" not in value:
            raise UserError(f"--ar {value}: write the aspect ratio as W:H, for example --ar 3:2")
        try:
            width, height = parse_size(value, limits.max_pixels)
        except UserError as error:
            raise UserError(f"--{name}: {error}") from None
        return {"width": width, "height": height}
    if name == "iw":
        iw = float(value) if _DECIMAL.fullmatch(value) else math.nan
        if not 0 <= iw <= MAX_MIDJOURNEY_IW:
            raise UserError(
                f"--iw {value}: use a number from 0 to {MAX_MIDJOURNEY_IW:g} (1: default)"
            )
        return {"image_weight": image_weight(iw)}
    if name == "sref":
        return {"sref": value}
    if name == "cfg":
        cfg = float(value) if _DECIMAL.fullmatch(value) else math.nan
        if not limits.min_cfg <= cfg <= limits.max_cfg:
            raise UserError(
                f"--cfg {value}: use a number from {limits.min_cfg:g} to {limits.max_cfg:g}"
            )
        return {"cfg": cfg}
    low, high = {
        "seed": (0, MAX_SEED),
        "steps": (1, limits.max_steps),
        "count": (1, limits.max_images),
        "clip-skip": (1, MAX_CLIP_SKIP),
    }[name]
    if not (_WHOLE.fullmatch(value) and low <= int(value) <= high):
        hint = {
            "seed": ", or leave --seed out for a random one",
            "clip-skip": " (2 for most anime models)",
        }.get(name, "")
        raise UserError(f"--{name} {value}: use a whole number from {low} to {high}{hint}")
    return {name.replace("-", "_"): int(value)}


def image_weight(iw: float) -> float:
    """Midjourney's --iw (0 to 3) as Dreamcord's image prompt weight (0 to 2), 1 staying 1."""
    return iw if iw <= 1 else 1 + (iw - 1) / 2


def _unknown_flag(flag: str) -> str:
    valid = ", ".join(f"--{name}" for name in FLAGS)
    close = difflib.get_close_matches(flag.lstrip("-—").lower(), FLAGS, n=1)
    hint = f"did you mean --{close[0]}? " if close else ""
    return f"unknown flag {flag[:40]}: {hint}the flags are {valid}"
