"""Style presets: a server's named prompt templates (`GuildSettings.styles`).

A style wraps the user's prompt (`{prompt}` in its template), adds its negative to the user's,
adds its LoRAs, and may set a size and a step count. Those two are server-level defaults: the
user's saved defaults, prompt flags and explicit options still override them. Pure functions on
plain values, so the cog stays a thin adapter and the rules are tested without Discord.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserError
from pipeline.prompt.limits import PromptLimits
from pipeline.request import LoraRef
from pipeline.sizes import parse_size

PLACEHOLDER = "{prompt}"
MAX_STYLES = 50
MAX_STYLE_LORAS = 5
MAX_TEMPLATE_CHARS = 1000
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_WEIGHTS = PromptLimits()
_FLAG = re.compile(r"(?<!\S)(?:--|—)[A-Za-z]")
"""Where the prompt flags start; the same rule as `pipeline.prompt.flags` reads them by."""


@dataclass(frozen=True)
class Style:
    """One preset, as stored (JSON) and applied."""

    name: str
    template: str
    negative: str = ""
    loras: tuple[tuple[str, float], ...] = ()
    size: str | None = None
    steps: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "template": self.template,
            "negative": self.negative,
            "loras": [[name, weight] for name, weight in self.loras],
            "size": self.size,
            "steps": self.steps,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Style:
        return cls(
            name=str(raw["name"]),
            template=str(raw["template"]),
            negative=str(raw.get("negative") or ""),
            loras=tuple((str(name), float(weight)) for name, weight in raw.get("loras") or ()),
            size=raw.get("size"),
            steps=raw.get("steps"),
        )

    def describe(self) -> str:
        """One line of what the style changes, for `/style list`."""
        parts = [f"`{self.template[:200]}`"]
        if self.negative:
            parts.append(f"negative: {self.negative[:150]}")
        if self.loras:
            parts.append("LoRAs: " + ", ".join(f"{name}:{weight:g}" for name, weight in self.loras))
        if self.size:
            parts.append(f"size {self.size}")
        if self.steps:
            parts.append(f"{self.steps} steps")
        return " · ".join(parts)


def style_names(styles: Mapping[str, Style]) -> list[str]:
    return sorted((style.name for style in styles.values()), key=str.lower)


def find_style(styles: Mapping[str, Style], name: str) -> Style:
    """The style called `name` in any letter case; a UserError listing the others."""
    style = styles.get(name.strip().lower())
    if style is None:
        known = style_names(styles)
        listing = f"this server has {', '.join(known)}" if known else "this server has none yet"
        raise UserError(f"there is no style named {name!r}: {listing} (/style list)")
    return style


def make_style(
    name: str,
    template: str,
    negative: str = "",
    *,
    loras: str | None = None,
    size: str | None = None,
    steps: int | None = None,
    known_loras: Collection[str] = (),
    max_pixels: int,
    max_steps: int,
) -> Style:
    """A checked style from what an admin typed; a UserError says what to change."""
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise UserError(
            f"style name {name!r} is not allowed: use 1 to 32 letters, digits, '_', '.' or '-', "
            "for example 'anime' or 'film-photo'"
        )
    template = " ".join(template.split())
    if PLACEHOLDER not in template:
        raise UserError(
            f"the template must contain {PLACEHOLDER} where the user's prompt goes, for "
            "example 'cinematic photo of {prompt}, 35mm, film grain'"
        )
    if len(template) > MAX_TEMPLATE_CHARS:
        raise UserError(f"the template is too long: keep it to {MAX_TEMPLATE_CHARS} characters")
    if size:
        width, height = parse_size(size, max_pixels)
        size = f"{width}x{height}"
    if steps is not None and not 1 <= steps <= max_steps:
        raise UserError(f"steps must be 1 to {max_steps}")
    return Style(
        name=name,
        template=template,
        negative=" ".join(negative.split()),
        loras=parse_style_loras(loras or "", known_loras),
        size=size or None,
        steps=steps,
    )


def parse_style_loras(text: str, known: Collection[str]) -> tuple[tuple[str, float], ...]:
    """`name:weight, name2:0.5` (weight 1 when left out), each name one of `known`."""
    by_key = {name.lower(): name for name in known}
    chosen: dict[str, tuple[str, float]] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, weight_text = item.partition(":")
        name = name.strip()
        spelled = by_key.get(name.lower())
        if spelled is None:
            raise UserError(
                f"the LoRA {name!r} is not installed or is disabled: /lora list shows the names"
            )
        try:
            weight = float(weight_text) if weight_text.strip() else 1.0
        except ValueError:
            raise UserError(
                f"{item!r}: write LoRAs as name:weight, for example {name}:0.8"
            ) from None
        if not _WEIGHTS.lora_weight_allowed(weight):
            raise UserError(
                f"{item!r}: the weight must be {_WEIGHTS.lora_weight_range}, usually 0.5 to 1"
            )
        chosen[spelled.lower()] = (spelled, weight)
    if len(chosen) > MAX_STYLE_LORAS:
        raise UserError(f"a style can add at most {MAX_STYLE_LORAS} LoRAs")
    return tuple(chosen.values())


def with_style(styles: Mapping[str, Style], style: Style) -> dict[str, Style]:
    """The styles with `style` added or replaced."""
    key = style.name.lower()
    if key not in styles and len(styles) >= MAX_STYLES:
        raise UserError(f"this server already has {MAX_STYLES} styles: remove one first")
    return {**styles, key: style}


def without_style(styles: Mapping[str, Style], name: str) -> dict[str, Style]:
    """The styles without `name`."""
    style = find_style(styles, name)
    return {key: kept for key, kept in styles.items() if key != style.name.lower()}


@dataclass(frozen=True)
class Styled:
    """What `/imagine` passes on after applying a style."""

    prompt: str
    negative: str | None
    loras: tuple[LoraRef, ...]
    server: dict[str, Any]


def apply_style(
    style: Style,
    prompt: str,
    negative: str | None,
    *,
    user: Mapping[str, Any],
    server: Mapping[str, Any],
    default_negative: str,
    known_loras: Collection[str],
) -> Styled:
    """Wrap the prompt, join the negatives, add the LoRAs, put size/steps in the server layer.

    Prompt flags (`--ar 3:2`, `--no text`) stay at the end, outside the template, so a
    template's tail never becomes part of a `--no`. The negative the user would have had
    (typed, else saved, else the server's, else `.env`'s) comes first, then the style's.
    """
    cut = _FLAG.search(prompt)
    body, flags = (prompt[: cut.start()], prompt[cut.start() :]) if cut else (prompt, "")
    wrapped = style.template.replace(PLACEHOLDER, body.strip())
    if flags:
        wrapped = f"{wrapped} {flags.strip()}"
    if negative is None:
        saved = [layer.get("negative") for layer in (user, server)]
        negative = next((text for text in saved if text is not None), default_negative)
    if style.negative:
        negative = ", ".join(
            part for part in (negative.strip().rstrip(","), style.negative) if part
        )
    enabled = {name.lower() for name in known_loras}
    for name, _ in style.loras:
        if name.lower() not in enabled:
            raise UserError(
                f"the style {style.name!r} uses the LoRA {name!r}, which is no longer available; "
                "choose another style or ask an admin to update it"
            )
    server_layer = dict(server)
    if style.size:
        server_layer["size"] = style.size
    if style.steps:
        server_layer["steps"] = style.steps
    loras = tuple(LoraRef(name, weight, weight) for name, weight in style.loras)
    return Styled(wrapped, negative, loras, server_layer)
