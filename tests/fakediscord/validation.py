"""The checks Discord makes on a message body that a bot bug would trip.

A bot that sends a 101-character custom_id or six action rows works against a lenient fake and
fails on Discord; these checks answer 400 / 50035 (or 50006 for an empty message) instead.
"""

from __future__ import annotations

from .errors import EMPTY_MESSAGE, DiscordError, invalid_form_body
from .payloads import Payload

FLAG_COMPONENTS_V2 = 1 << 15


def check_content(content: str) -> None:
    if len(content) > 2000:
        raise invalid_form_body("content > 2000")


def check_message(body: Payload, has_files: bool) -> None:
    """Raise Discord's error for a body it would refuse (bad custom_id, empty message...)."""
    content = body.get("content") or ""
    check_content(content)
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        raise invalid_form_body("more than 10 embeds")
    for embed in embeds:
        if len(embed.get("title") or "") > 256 or len(embed.get("description") or "") > 4096:
            raise invalid_form_body("embed too long")
        if len(embed.get("fields") or []) > 25:
            raise invalid_form_body("> 25 fields")
    components = body.get("components") or []
    if len(components) > 5 and not (body.get("flags") or 0) & FLAG_COMPONENTS_V2:
        raise invalid_form_body("more than 5 rows")
    stack = list(components)
    while stack:
        component = stack.pop()
        custom_id = component.get("custom_id")
        if custom_id is not None and not 1 <= len(custom_id) <= 100:
            raise invalid_form_body(f"custom_id {custom_id!r} length")
        children = component.get("components") or []
        if component.get("type") == 1 and len(children) > 5:
            raise invalid_form_body("row > 5 items")
        stack.extend(children)
    if not (content or embeds or components or has_files or body.get("attachments")):
        raise DiscordError(400, EMPTY_MESSAGE, "Cannot send an empty message")
