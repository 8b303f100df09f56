"""Extra-network tags such as `<lora:name:0.7>`: found, checked and removed from the prompt text.

As in A1111, every `<kind:args>` tag is cut out of the text before attention is parsed, and the
args are `:`-separated: positional values, or `te=`/`unet=` named ones. `<lyco:...>` is A1111's
alias of `<lora:...>`. `<hypernet:name:strength>` takes one optional strength, and hypernetworks
keep their prompt order, since each transforms what the one before it made. Names are looked up
in the set of known names, never turned into paths.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection
from dataclasses import dataclass

from pipeline.prompt.limits import PromptLimits
from pipeline.request import HypernetRef, LoraRef

_TAG = re.compile(r"<(\w+):([^>]+)>")
_UNFINISHED = re.compile(r"<(?:lora|lyco|hypernet):[^>]*$", re.IGNORECASE)
_LORA_KINDS = {"lora", "lyco"}
_MAX_NAME = 200
"""Longer names are not looked up or compared, which keeps difflib's cost bounded."""


@dataclass(frozen=True)
class TagScan:
    """The text with all tags cut out, the networks they ask for, and what was wrong with them."""

    text: str
    loras: tuple[LoraRef, ...]
    warnings: tuple[str, ...]
    errors: tuple[str, ...]
    hypernets: tuple[HypernetRef, ...] = ()


def extract_tags(
    text: str,
    known_loras: Collection[str],
    limits: PromptLimits,
    known_hypernets: Collection[str] = (),
) -> TagScan:
    """Cut every tag out of the positive prompt and read its networks; problems become messages."""
    tags: list[tuple[str, str, str]] = []

    def cut(match: re.Match[str]) -> str:
        tags.append((match[0], match[1], match[2]))
        return ""

    stripped = _TAG.sub(cut, text)
    errors: list[str] = []
    chosen: dict[str, LoraRef] = {}
    hypernets: dict[str, HypernetRef] = {}
    lookup = _NameLookup(known_loras, "LoRA")
    hypernet_lookup = _NameLookup(known_hypernets, "hypernetwork")
    for tag, kind, args in tags:
        kind = kind.lower()
        if kind == "hypernet":
            found = _read_hypernet(tag, args, hypernet_lookup, limits)
            if isinstance(found, str):
                errors.append(found)
            elif found.name in hypernets:
                errors.append(f"hypernetwork {found.name!r} appears twice: keep one tag")
            else:
                hypernets[found.name] = found
        elif kind not in _LORA_KINDS:
            errors.append(
                f"unknown tag {tag}: only <lora:name:weight> and <hypernet:name:strength> are read"
            )
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
    if len(hypernets) > limits.max_hypernets:
        errors.append(
            f"{len(hypernets)} hypernetworks in one prompt, the limit is "
            f"{limits.max_hypernets}: remove some"
        )
    return TagScan(
        stripped,
        tuple(chosen.values()),
        _unfinished(stripped),
        tuple(errors),
        tuple(hypernets.values()),
    )


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
        if not limits.lora_weight_allowed(weight):
            return f"{tag}: weight {weight:g} is out of range, use {limits.lora_weight_range}"
        weights.append(weight)
    known = lookup.find(name)
    if known is None:
        return f"unknown LoRA {name[:_MAX_NAME]!r} in {tag[: _MAX_NAME + 20]}: {lookup.hint(name)}"
    return LoraRef(known, weights[0], weights[1])


def _read_hypernet(
    tag: str, args: str, lookup: _NameLookup, limits: PromptLimits
) -> HypernetRef | str:
    """The HypernetRef of `<hypernet:name>` or `<hypernet:name:strength>`, or what is wrong."""
    values = args.split(":")
    if len(values) > 2:
        return f"{tag}: too many values, write <hypernet:name:strength>"
    name = values[0].strip()
    if not name:
        return f"{tag}: the hypernetwork name is missing, write <hypernet:name:strength>"
    text = values[1] if len(values) > 1 else "1"
    strength = _read_number(text)
    if strength is None:
        return f"{tag}: strength {text.strip()!r} is not a number, write for example 0.6"
    low, high = limits.min_hypernet_strength, limits.max_hypernet_strength
    if not low <= strength <= high:
        return f"{tag}: strength {strength:g} is out of range, use {low:g} to {high:g}"
    known = lookup.find(name)
    if known is None:
        return (
            f"unknown hypernetwork {name[:_MAX_NAME]!r} in {tag[: _MAX_NAME + 20]}: "
            f"{lookup.hint(name)}"
        )
    return HypernetRef(known, strength)


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

    def __init__(self, names: Collection[str], what: str) -> None:
        self._names = set(names)
        self._what = what
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
            return f"no {self._what}s are installed yet"
        close = []
        if len(name) <= _MAX_NAME:
            close = difflib.get_close_matches(name.casefold(), self._folded, n=3, cutoff=0.6)
        if not close:
            return f"no {self._what} by that name is installed"
        spelled = [spelling for key in close for spelling in sorted(self._folded[key])]
        return "did you mean " + " or ".join(repr(spelling) for spelling in spelled[:3]) + "?"
