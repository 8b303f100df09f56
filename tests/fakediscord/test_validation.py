"""The fake refuses what Discord refuses: over-limit embeds, components, modals and choices get
400 / 50035. The numbers are Discord's documented limits (Embed limits, Component reference)."""

from __future__ import annotations

import pytest

from tests.fakediscord.errors import INVALID_FORM_BODY, DiscordError
from tests.fakediscord.validation import check_choices, check_message, check_modal


def embed(**parts: object) -> dict[str, object]:
    return {"title": "t", **parts}


def row(*components: dict[str, object]) -> dict[str, object]:
    return {"type": 1, "components": list(components)}


def text_input(**parts: object) -> dict[str, object]:
    return {"type": 4, "custom_id": "p", "style": 2, "label": "Prompt", **parts}


ACCEPTED = [
    {"content": "x" * 2000},
    {"embeds": [embed(description="d" * 4096, footer={"text": "f" * 1800})]},
    {"embeds": [embed(fields=[{"name": "n", "value": "v" * 1024}] * 5)]},
    {"components": [row({"type": 2, "style": 1, "custom_id": "b", "label": "l" * 80})]},
]
REFUSED = [
    {"content": "x" * 2001},
    {"embeds": [embed(title="t" * 257)]},
    {"embeds": [embed(fields=[{"name": "n", "value": "v" * 1025}])]},
    {"embeds": [embed(fields=[{"name": "n" * 257, "value": "v"}])]},
    {"embeds": [embed(fields=[{"name": "n", "value": ""}])]},
    {"embeds": [embed(footer={"text": "f" * 2049})]},
    {"embeds": [embed(author={"name": "a" * 257})]},
    {"embeds": [embed(description="d" * 4000, footer={"text": "f" * 2001})]},
    {"embeds": [embed(description="d" * 3000), embed(description="d" * 3000)]},
    {"components": [row({"type": 2, "style": 1, "custom_id": "b", "label": "l" * 81})]},
    {
        "components": [
            row({"type": 3, "custom_id": "s", "options": [{"label": "l" * 101, "value": "v"}]})
        ]
    },
]


@pytest.mark.parametrize("body", ACCEPTED)
def test_bodies_within_discords_limits_are_accepted(body: dict[str, object]) -> None:
    check_message(body, has_files=False)


@pytest.mark.parametrize("body", REFUSED)
def test_bodies_over_discords_limits_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(DiscordError) as refused:
        check_message(body, has_files=False)
    assert (refused.value.status, refused.value.code) == (400, INVALID_FORM_BODY)


def test_modals_and_choices_over_the_limits_are_refused() -> None:
    check_modal({"custom_id": "m", "title": "t" * 45, "components": [row(text_input())]})
    for modal in (
        {"custom_id": "m", "title": "t" * 46, "components": [row(text_input())]},
        {"custom_id": "m", "title": "t", "components": [row(text_input(label="l" * 46))]},
        {"custom_id": "m", "title": "t", "components": [row(text_input(value="v" * 4001))]},
        {
            "custom_id": "m",
            "title": "t",
            "components": [row(text_input(max_length=10, value="v" * 11))],
        },
    ):
        with pytest.raises(DiscordError):
            check_modal(modal)
    check_choices([{"name": "n" * 100, "value": "v" * 100}])
    with pytest.raises(DiscordError):
        check_choices([{"name": "n" * 101, "value": "v"}])
