"""The checks Discord makes on a message, modal or autocomplete body that a bot bug would trip.

A bot that sends a 101-character custom_id, six action rows or an over-long embed works against
a lenient fake and fails on Discord; these checks answer 400 / 50035 (or 50006 for an empty
message) instead, so every end-to-end test is also a check of the bot's text budgets. The
numbers are Discord's documented limits (developer docs: Message, Embed limits, Components).
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import EMPTY_MESSAGE, DiscordError, invalid_form_body
from .payloads import Payload

FLAG_COMPONENTS_V2 = 1 << 15

CONTENT = 2000
EMBEDS = 10
EMBED_PARTS = {"title": 256, "description": 4096}
FIELD_PARTS = {"name": 256, "value": 1024}
FOOTER_TEXT = 2048
AUTHOR_NAME = 256
FIELDS = 25
EMBEDS_TOTAL = 6000
"""Characters of all embeds of one message together: titles, descriptions, fields, footers,
author names."""
ROWS, ROW_ITEMS = 5, 5
CUSTOM_ID = 100
BUTTON_LABEL = 80
SELECT_OPTIONS = 25
OPTION_PARTS = {"label": 100, "value": 100, "description": 100}
SELECT_PLACEHOLDER = 150
MODAL_TITLE = 45
INPUT_PARTS = {"label": 45, "placeholder": 100}
INPUT_VALUE = 4000
LABEL_PARTS = {"label": 45, "description": 100}
CHOICES = 25
CHOICE_PARTS = {"name": 100, "value": 100}

BUTTON, SELECT_TYPES, TEXT_INPUT, LABEL = 2, {3, 5, 6, 7, 8}, 4, 18


def check_content(content: str) -> None:
    if len(content) > CONTENT:
        raise invalid_form_body(f"content > {CONTENT}")


def check_limits(body: Payload) -> None:
    """Raise Discord's error for content, embeds or components over Discord's limits."""
    check_content(body.get("content") or "")
    check_embeds(body.get("embeds") or [])
    components = body.get("components") or []
    if len(components) > ROWS and not (body.get("flags") or 0) & FLAG_COMPONENTS_V2:
        raise invalid_form_body(f"more than {ROWS} rows")
    for component in _walk(components):
        check_component(component)


def check_message(body: Payload, has_files: bool) -> None:
    """Raise Discord's error for a body it would refuse (limits, bad custom_id, empty...)."""
    check_limits(body)
    if not (
        body.get("content")
        or body.get("embeds")
        or body.get("components")
        or has_files
        or body.get("attachments")
    ):
        raise DiscordError(400, EMPTY_MESSAGE, "Cannot send an empty message")


def check_embeds(embeds: list[Payload]) -> None:
    if len(embeds) > EMBEDS:
        raise invalid_form_body(f"more than {EMBEDS} embeds")
    total = 0
    for embed in embeds:
        parts = {part: embed.get(part) or "" for part in EMBED_PARTS}
        parts["footer.text"] = (embed.get("footer") or {}).get("text") or ""
        parts["author.name"] = (embed.get("author") or {}).get("name") or ""
        fields = embed.get("fields") or []
        if len(fields) > FIELDS:
            raise invalid_form_body(f"embed with more than {FIELDS} fields")
        limits = {**EMBED_PARTS, "footer.text": FOOTER_TEXT, "author.name": AUTHOR_NAME}
        for part, text in parts.items():
            _check_length(f"embed {part}", str(text), limits[part])
        for field in fields:
            for part, limit in FIELD_PARTS.items():
                text = str(field.get(part) or "")
                if not text:
                    raise invalid_form_body(f"embed field {part} is empty")
                _check_length(f"embed field {part}", text, limit)
                total += len(text)
        total += sum(len(str(text)) for text in parts.values())
    if total > EMBEDS_TOTAL:
        raise invalid_form_body(f"embeds total {total} > {EMBEDS_TOTAL} characters")


def check_component(component: Payload) -> None:
    """One component's own limits (its children are checked on their own)."""
    kind = component.get("type")
    custom_id = component.get("custom_id")
    if custom_id is not None and not 1 <= len(custom_id) <= CUSTOM_ID:
        raise invalid_form_body(f"custom_id {custom_id!r} length")
    if kind == 1 and len(component.get("components") or []) > ROW_ITEMS:
        raise invalid_form_body(f"row > {ROW_ITEMS} items")
    if kind == BUTTON:
        _check_length("button label", component.get("label") or "", BUTTON_LABEL)
    elif kind in SELECT_TYPES:
        _check_length("select placeholder", component.get("placeholder") or "", SELECT_PLACEHOLDER)
        options = component.get("options") or []
        if len(options) > SELECT_OPTIONS:
            raise invalid_form_body(f"select with more than {SELECT_OPTIONS} options")
        for option in options:
            for part, limit in OPTION_PARTS.items():
                _check_length(f"select option {part}", option.get(part) or "", limit)
    elif kind == TEXT_INPUT:
        for part, limit in INPUT_PARTS.items():
            _check_length(f"text input {part}", component.get(part) or "", limit)
        max_length = component.get("max_length") or INPUT_VALUE
        if max_length > INPUT_VALUE:
            raise invalid_form_body(f"text input max_length > {INPUT_VALUE}")
        _check_length("text input value", component.get("value") or "", max_length)
    elif kind == LABEL:
        for part, limit in LABEL_PARTS.items():
            _check_length(f"label {part}", component.get(part) or "", limit)


def check_modal(data: Payload) -> None:
    """A modal callback's data: a custom_id, a title of up to 45 characters, components."""
    if not data.get("custom_id") or not data.get("title") or not data.get("components"):
        raise invalid_form_body("modal")
    _check_length("modal title", data["title"], MODAL_TITLE)
    for component in _walk(data["components"]):
        check_component(component)


def check_choices(choices: list[Payload]) -> None:
    if len(choices) > CHOICES:
        raise invalid_form_body(f"more than {CHOICES} choices")
    for choice in choices:
        for part, limit in CHOICE_PARTS.items():
            value = choice.get(part)
            if isinstance(value, str):
                _check_length(f"choice {part}", value, limit)


def _walk(components: list[Payload]) -> Iterator[Payload]:
    """Every component, rows, labels and their children included."""
    stack = list(components)
    while stack:
        component = stack.pop()
        yield component
        stack.extend(component.get("components") or [])
        if isinstance(component.get("component"), dict):
            stack.append(component["component"])


def _check_length(what: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise invalid_form_body(f"{what} is {len(text)} characters, more than {limit}")
