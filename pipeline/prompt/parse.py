"""The prompt language's one entry point: text in, a checked `ParsedPrompt` out, never an exception.

Order matters and follows A1111 where A1111 has a rule: flags are cut first (so a tag inside
`--no ...` goes to the negative), then extra-network tags, then AND parts and prompt editing,
then attention. Attention is checked on every text the editing can give over the most steps a
request may have (the engine reads those texts), and on the text as written, which is what
`attention` shows. Every problem is collected, so a user sees all of them at once.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pipeline.errors import UserError
from pipeline.prompt.attention import BREAK_WEIGHT, scan_attention
from pipeline.prompt.composable import has_and, split_parts
from pipeline.prompt.editing import Timeline, prompt_schedule
from pipeline.prompt.embeddings import find_embeddings
from pipeline.prompt.flags import extract_flags
from pipeline.prompt.limits import PromptLimits
from pipeline.prompt.schedule import lint_texts, part_problems
from pipeline.prompt.tags import NetworkTag, extract_tags, remove_tags
from pipeline.request import HypernetRef, LoraRef

Pieces = tuple[tuple[str, float], ...]
DEFAULT_LIMITS = PromptLimits()


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt and negative read by the prompt language.

    `prompt` and `negative` are the texts for the text encoder: tags and flags cut out, editing
    and attention syntax kept (the engine reads them again). `attention` is the attention reading
    of the text as written. `flags` holds the request fields the flags set. `networks` is every
    LoRA and hypernetwork tag found, installed or not.
    """

    prompt: str
    negative: str
    attention: Pieces = (("", 1.0),)
    negative_attention: Pieces = (("", 1.0),)
    loras: tuple[LoraRef, ...] = ()
    hypernets: tuple[HypernetRef, ...] = ()
    embeddings: tuple[str, ...] = ()
    negative_embeddings: tuple[str, ...] = ()
    flags: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    networks: tuple[NetworkTag, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the prompt can be run as it is."""
        return not self.errors

    def raise_if_errors(self) -> None:
        """Raise one UserError that lists every error, for edges that report exceptions."""
        if self.errors:
            raise UserError("; ".join(self.errors))


def parse_prompt(
    text: str,
    negative: str = "",
    *,
    known_loras: Collection[str] = (),
    known_embeddings: Collection[str] = (),
    known_hypernets: Collection[str] = (),
    limits: PromptLimits = DEFAULT_LIMITS,
) -> ParsedPrompt:
    """Read a prompt and its negative; problems are collected in `errors` and `warnings`."""
    too_long = [
        f"the {label} is {len(value):,} characters long, the limit is {limits.max_length:,}"
        for label, value in (("prompt", text), ("negative prompt", negative))
        if len(value) > limits.max_length
    ]
    if too_long:
        return ParsedPrompt(text, negative, errors=tuple(too_long))

    flags = extract_flags(text, limits)
    tags = extract_tags(flags.text, known_loras, limits, known_hypernets)
    negative_text, dropped = remove_tags(_join_negative(negative, flags.no))
    warnings = [*tags.warnings, *_scheduled_tags(flags.text, limits)]
    warnings += [f"{tag} has no effect in the negative prompt and was removed" for tag in dropped]
    if has_and(negative_text):
        warnings.append(
            "AND in the negative prompt is read as the word, as A1111 reads it: "
            "only the prompt is split into parts"
        )
    errors = [*flags.errors, *tags.errors, *part_problems(tags.text)]

    pieces: list[Pieces] = []
    for label, source, composable in (
        ("prompt", tags.text, True),
        ("negative prompt", negative_text, False),
    ):
        scan = scan_attention(source)
        texts = lint_texts(source, limits.max_steps, composable=composable)
        scans = [scan_attention(text) for text in sorted(texts)]
        for checked in (*scans, scan):
            errors += [
                f"{label}: weight {bad!r} is not a number, write for example (text:1.2)"
                for bad in checked.malformed
            ]
        # One weight error is enough: the texts repeat the same pieces.
        weights = [e for c in (*scans, scan) for e in _weight_errors(label, c.pieces, limits)]
        errors += weights[:1]
        if any(p == "BREAK" and w != BREAK_WEIGHT for checked in scans for p, w in checked.pieces):
            warnings.append(
                f"{label}: BREAK inside brackets is read as the word 'BREAK', as A1111 does; "
                "put it outside the brackets to start a new chunk"
            )
        pieces.append(tuple(scan.pieces))

    return ParsedPrompt(
        prompt=tags.text,
        negative=negative_text,
        attention=pieces[0],
        negative_attention=pieces[1],
        loras=tags.loras,
        hypernets=tags.hypernets,
        embeddings=find_embeddings(pieces[0], known_embeddings),
        negative_embeddings=find_embeddings(pieces[1], known_embeddings),
        flags=MappingProxyType(flags.values),
        warnings=tuple(dict.fromkeys(warnings)),
        errors=tuple(dict.fromkeys(errors)),
        networks=tags.networks,
    )


def _scheduled_tags(text: str, limits: PromptLimits) -> list[str]:
    """Extra-network tags inside prompt editing or alternation, which still apply at every step.

    A1111 cuts the tags out before it reads the editing, so `[<lora:x:1>:10]` is the LoRA for
    the whole image. Each tag is marked in place; a mark that some text of its part lacks, over
    the most steps a request may have, sits inside an edit.
    """
    tags = list(dict.fromkeys(remove_tags(text)[1]))
    marks = [f"\0{index}\0" for index in range(len(tags))]
    marked = text
    for tag, mark in zip(tags, marks, strict=True):
        marked = marked.replace(tag, mark)
    timeline = Timeline(limits.max_steps)
    inside: set[str] = set()
    for part, _ in split_parts(marked) if tags else ():
        texts = [piece for _, piece in prompt_schedule(part, timeline)]
        inside.update(mark for mark in marks if mark in part and not all(mark in t for t in texts))
    return [
        f"{tag} is inside prompt editing or alternation, but it applies at every step: "
        "A1111 cuts extra-network tags out before it reads the editing"
        for tag, mark in zip(tags, marks, strict=True)
        if mark in inside
    ]


def _join_negative(negative: str, additions: tuple[str, ...]) -> str:
    """The negative with the `--no` texts appended, comma-separated; unchanged without them."""
    if not additions:
        return negative
    base = negative.rstrip().removesuffix(",").rstrip()
    return ", ".join(part for part in (base, *additions) if part)


def _weight_errors(label: str, pieces: list[tuple[str, float]], limits: PromptLimits) -> list[str]:
    """Weights that are infinite or beyond the limit, usually from deep nesting or a typo."""
    for text, weight in pieces:
        if text == "BREAK" and weight == BREAK_WEIGHT:
            continue
        if not (math.isfinite(weight) and abs(weight) <= limits.max_attention):
            return [
                f"{label}: {text[:30]!r} has attention weight {weight:g}, the limit is "
                f"{limits.max_attention:g}: use fewer brackets or a smaller (text:weight)"
            ]
    return []
