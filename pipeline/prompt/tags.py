"""Extra-network tags such as `<lora:name:0.7>`: found, checked and removed from the prompt text.

As in A1111, every `<kind:args>` tag is cut out of the text before attention is parsed, and the
args are `:`-separated: positional values, or `te=`/`unet=` named ones. `<lyco:...>` is A1111's
alias of `<lora:...>`. `<hypernet:name:strength>` takes one optional strength, and hypernetworks
keep their prompt order, since each transforms what the one before it made. Names are looked up
in the set of known names, never turned into paths.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from pipeline.prompt.limits import PromptLimits
from pipeline.prompt.suggestions import MAX_NAME, MAX_SUGGESTED, SuggestionBudget, index_of
from pipeline.request import HypernetRef, LoraRef

_TAG = re.compile(r"<(\w+):([^>]+)>")
_UNFINISHED = re.compile(r"<(?:lora|lyco|hypernet):[^>]*$", re.IGNORECASE)
_LORA_KINDS = {"lora", "lyco"}


@dataclass(frozen=True)
class NetworkTag:
    """One `<lora:...>` or `<hypernet:...>` tag with a name, whether or not it is installed.

    `name` is the installed spelling, or the written one when nothing installed matches; then
    `closest` holds the installed names it may have meant (searched for the prompt's first few
    unknown names only, see `pipeline.prompt.suggestions`). `weights` are (text encoder, UNet)
    for a LoRA and (strength,) for a hypernetwork, empty when they cannot be read.
    """

    kind: str
    tag: str
    name: str
    installed: bool
    weights: tuple[float, ...] = ()
    closest: tuple[str, ...] = ()


@dataclass(frozen=True)
class TagScan:
    """The text with all tags cut out, the networks they ask for, and what was wrong with them.

    `networks` lists every LoRA and hypernetwork tag that has a name, in prompt order, the
    ones not installed too, so a linter can show all it found.
    """

    text: str
    loras: tuple[LoraRef, ...]
    warnings: tuple[str, ...]
    errors: tuple[str, ...]
    hypernets: tuple[HypernetRef, ...] = ()
    networks: tuple[NetworkTag, ...] = ()


@dataclass(frozen=True)
class _Read:
    """A tag's name as written ("" if none), its weights (empty unless valid) and its mistake."""

    name: str
    weights: tuple[float, ...] = ()
    error: str | None = None


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
    networks: list[NetworkTag] = []
    lookups = {
        "lora": _NameLookup(known_loras, "LoRA"),
        "hypernet": _NameLookup(known_hypernets, "hypernetwork"),
    }
    budget = SuggestionBudget()
    for tag, kind, args in tags:
        kind = "lora" if kind.lower() in _LORA_KINDS else kind.lower()
        if kind not in lookups:
            errors.append(
                f"unknown tag {tag}: only <lora:name:weight> and <hypernet:name:strength> are read"
            )
            continue
        read = (
            _read_lora(tag, args, limits) if kind == "lora" else _read_hypernet(tag, args, limits)
        )
        lookup = lookups[kind]
        known = lookup.index.find(read.name) if read.name else None
        closest = None if known or not read.name else budget.closest(lookup.index, read.name)
        if read.name:
            networks.append(
                NetworkTag(kind, tag, known or read.name, bool(known), read.weights, closest or ())
            )
        if read.error is not None:
            errors.append(read.error)
        elif known is None:
            errors.append(
                f"unknown {lookup.what} {read.name[:MAX_NAME]!r} in {tag[: MAX_NAME + 20]}: "
                f"{lookup.hint(closest)}"
            )
        elif kind == "hypernet":
            if known in hypernets:
                errors.append(f"hypernetwork {known!r} appears twice: keep one tag")
            else:
                hypernets[known] = HypernetRef(known, read.weights[0])
        elif (earlier := chosen.setdefault(known, ref := LoraRef(known, *read.weights))) != ref:
            errors.append(
                f"LoRA {known!r} appears twice with different weights "
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
        tuple(networks),
    )


def tag_names(text: str, kinds: Collection[str]) -> list[str]:
    """The names written in the text's tags of these kinds, each once, in order."""
    names = (_name_of(match[2]) for match in _TAG.finditer(text) if match[1].lower() in kinds)
    return list(dict.fromkeys(name for name in names if name))


def rename_tags(text: str, kinds: Collection[str], renames: Mapping[str, str | None]) -> str:
    """The text with the tags of these kinds renamed by `renames`; a name mapped to None has
    its tags cut. A1111's paste renames LoRA tags this way after finding them by hash."""

    def rename(match: re.Match[str]) -> str:
        name = _name_of(match[2])
        if match[1].lower() not in kinds or name not in renames:
            return match[0]
        if (new := renames[name]) is None:
            return ""
        return f"<{match[1]}:{':'.join([new, *match[2].split(':')[1:]])}>"

    return _TAG.sub(rename, text)


def _name_of(args: str) -> str:
    return args.split(":", 1)[0].strip()


def remove_tags(text: str) -> tuple[str, list[str]]:
    """The text with every tag cut out, and the tags cut; used where tags have no effect."""
    found = [match[0] for match in _TAG.finditer(text)]
    return _TAG.sub("", text), found


def _unfinished(text: str) -> tuple[str, ...]:
    if match := _UNFINISHED.search(text):
        return (f"{match[0][:40]!r} looks like an unfinished tag: close it with '>'",)
    return ()


def _read_lora(tag: str, args: str, limits: PromptLimits) -> _Read:
    """A `<lora:...>` tag's name and (te, unet) weights, or what is wrong with it."""
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in args.split(":"):
        key, equals, value = item.partition("=")
        if equals:
            named[key.strip().lower()] = value
        else:
            positional.append(item)
    name = positional[0].strip() if positional else ""
    if unknown := sorted(set(named) - {"te", "unet"}):
        return _Read(
            name, error=f"{tag}: unknown option {unknown[0]}=, only te= and unet= are supported"
        )
    if len(positional) > 3:
        return _Read(
            name, error=f"{tag}: too many values, write <lora:name:weight> or <lora:name:te:unet>"
        )
    if not name:
        return _Read(name, error=f"{tag}: the LoRA name is missing, write <lora:name:weight>")
    te_text = named.get("te", positional[1] if len(positional) > 1 else "1")
    unet_text = named.get("unet", positional[2] if len(positional) > 2 else te_text)
    weights = []
    for text in (te_text, unet_text):
        weight = _read_number(text)
        if weight is None:
            return _Read(
                name, error=f"{tag}: weight {text.strip()!r} is not a number, write for example 0.8"
            )
        if not limits.lora_weight_allowed(weight):
            error = f"{tag}: weight {weight:g} is out of range, use {limits.lora_weight_range}"
            return _Read(name, error=error)
        weights.append(weight)
    return _Read(name, tuple(weights))


def _read_hypernet(tag: str, args: str, limits: PromptLimits) -> _Read:
    """A `<hypernet:name>` or `<hypernet:name:strength>` tag's name and strength, or what is
    wrong with it."""
    values = args.split(":")
    name = values[0].strip()
    if len(values) > 2:
        return _Read(name, error=f"{tag}: too many values, write <hypernet:name:strength>")
    if not name:
        return _Read(
            name, error=f"{tag}: the hypernetwork name is missing, write <hypernet:name:strength>"
        )
    text = values[1] if len(values) > 1 else "1"
    strength = _read_number(text)
    if strength is None:
        return _Read(
            name, error=f"{tag}: strength {text.strip()!r} is not a number, write for example 0.6"
        )
    low, high = limits.min_hypernet_strength, limits.max_hypernet_strength
    if not low <= strength <= high:
        return _Read(
            name, error=f"{tag}: strength {strength:g} is out of range, use {low:g} to {high:g}"
        )
    return _Read(name, (strength,))


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
    """One kind's installed names, and the words that say a name is not among them."""

    def __init__(self, names: Collection[str], what: str) -> None:
        self.index = index_of(names)
        self.what = what

    def hint(self, closest: tuple[str, ...] | None) -> str:
        """What to tell about an unknown name, given its close names (None: not searched)."""
        if not self.index.names:
            return f"no {self.what}s are installed yet"
        if closest is None:
            return (
                f"no {self.what} by that name is installed (names are suggested for the first "
                f"{MAX_SUGGESTED} unknown names of a prompt)"
            )
        if not closest:
            return f"no {self.what} by that name is installed"
        return "did you mean " + " or ".join(repr(spelling) for spelling in closest) + "?"
