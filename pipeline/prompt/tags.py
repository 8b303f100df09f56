"""Extra-network tags such as `<lora:name:0.7>`: found, checked and removed from the prompt text.

As in A1111, every `<kind:args>` tag is cut out of the text before attention is parsed, and the
args are `:`-separated: positional values, or `te=`/`unet=` named ones. `<lyco:...>` is A1111's
alias of `<lora:...>`. Names are looked up in the set of known names, never turned into paths.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection
from dataclasses import dataclass

from pipeline.prompt.limits import PromptLimits
from pipeline.request import LoraRef

_TAG = re.compile(r"<(\w+):([^>]+)>")
_UNFINISHED = re.compile(r"<(?:lora|lyco|hypernet):[^>]*$", re.IGNORECASE)
_LORA_KINDS = {"lora", "lyco"}
_MAX_NAME = 200
"""Longer names are not looked up or compared, which keeps difflib's cost bounded."""


@dataclass(frozen=True)
class TagScan:
    """The text with all tags cut out, the LoRAs they ask for, and what was wrong with them."""

    text: str
    loras: tuple[LoraRef, ...]
    warnings: tuple[str, ...]
    errors: tuple[str, ...]


def extract_tags(text: str, known_loras: Collection[str], limits: PromptLimits) -> TagScan:
    """Cut every tag out of the positive prompt and read its LoRAs; problems become messages."""
    tags: list[tuple[str, str, str]] = []

    def cut(match: re.Match[str]) -> str:
        tags.append((match[0], match[1], match[2]))
        return ""

    stripped = _TAG.sub(cut, text)
    errors: list[str] = []
    chosen: dict[str, LoraRef] = {}
    lookup = _NameLookup(known_loras)
    for tag, kind, args in tags:
        kind = kind.lower()
        if kind == "hypernet":
            errors.append(f"{tag}: hypernetworks are not supported, remove the tag or use a LoRA")
        elif kind not in _LORA_KINDS:
            errors.append(f"unknown tag {tag}: only <lora:name> and <lora:name:weight> are read")
        elif isinstance(ref := _read_lora(tag, args, lookup, limits), str):
            errors.append(ref)
        elif (earlier := chosen.setdefault(ref.name, ref)) != ref:
            errors.append(
                f"LoRA {ref.name!r} appears twice with different weights "
                f"({_weights(earlier)} and {_weights(ref)}): keep one tag"
            )
    if len(chosen) > limits.max_loras:
        errors.append(
            f"{len(chosen)} LoRAs in one prompt, the limit is {limits.max_loras}: remove some"
        )
    return TagScan(stripped, tuple(chosen.values()), _unfinished(stripped), tuple(errors))


def remove_tags(text: str) -> tuple[str, list[str]]:
    """The text with every tag cut out, and the tags cut; used where tags have no effect."""
    found = [match[0] for match in _TAG.finditer(text)]
    return _TAG.sub("", text), found


def _unfinished(text: str) -> tuple[str, ...]:
    if match := _UNFINISHED.search(text):
        return (f"{match[0][:40]!r} looks like an unfinished tag: close it with '>'",)
    return ()


def _read_lora(tag: str, args: str, lookup: _NameLookup, limits: PromptLimits) -> LoraRef | str:
    """The LoraRef a tag asks for, or the message saying what is wrong with it."""
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in args.split(":"):
        key, equals, value = item.partition("=")
        if equals:
            named[key.strip().lower()] = value
        else:
            positional.append(item)
    if unknown := sorted(set(named) - {"te", "unet"}):
        return f"{tag}: unknown option {unknown[0]}=, only te= and unet= are supported"
    if len(positional) > 3:
        return f"{tag}: too many values, write <lora:name:weight> or <lora:name:te:unet>"
    name = positional[0].strip() if positional else ""
    if not name:
        return f"{tag}: the LoRA name is missing, write <lora:name:weight>"
    te_text = named.get("te", positional[1] if len(positional) > 1 else "1")
    unet_text = named.get("unet", positional[2] if len(positional) > 2 else te_text)
    weights = []
    for text in (te_text, unet_text):
        weight = _read_number(text)
        if weight is None:
            return f"{tag}: weight {text.strip()!r} is not a number, write for example 0.8"
        if not limits.min_lora_weight <= weight <= limits.max_lora_weight:
            return (
                f"{tag}: weight {weight:g} is out of range, use "
                f"{limits.min_lora_weight:g} to {limits.max_lora_weight:g}"
            )
        weights.append(weight)
    known = lookup.find(name)
    if known is None:
        return f"unknown LoRA {name[:_MAX_NAME]!r} in {tag[: _MAX_NAME + 20]}: {lookup.hint(name)}"
    return LoraRef(known, weights[0], weights[1])


def _read_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _weights(ref: LoraRef) -> str:
    if ref.te_weight == ref.unet_weight:
        return f"{ref.te_weight:g}"
    return f"{ref.te_weight:g}:{ref.unet_weight:g}"


class _NameLookup:
    """Known names by exact spelling, then by unique case-insensitive spelling."""

    def __init__(self, names: Collection[str]) -> None:
        self._names = set(names)
        folded: dict[str, list[str]] = {}
        for name in self._names:
            folded.setdefault(name.casefold(), []).append(name)
        self._folded = folded

    def find(self, name: str) -> str | None:
        if name in self._names:
            return name
        matches = self._folded.get(name.casefold(), [])
        return matches[0] if len(matches) == 1 else None

    def hint(self, name: str) -> str:
        if not self._names:
            return "no LoRAs are installed yet"
        close = []
        if len(name) <= _MAX_NAME:
            close = difflib.get_close_matches(name.casefold(), self._folded, n=3, cutoff=0.6)
        if not close:
            return "no LoRA by that name is installed"
        spelled = [spelling for key in close for spelling in sorted(self._folded[key])]
        return "did you mean " + " or ".join(repr(spelling) for spelling in spelled[:3]) + "?"
