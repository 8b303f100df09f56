"""Which value wins when a field is set in several places: the order of precedence, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_options(
    *,
    explicit: Mapping[str, Any],
    flags: Mapping[str, Any],
    user: Mapping[str, Any],
    server: Mapping[str, Any],
    model: Mapping[str, Any] | None = None,
    pasted: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every field from the first layer that sets it: explicit slash/CLI options, then prompt
    flags, then a pasted recipe's, then the user's defaults, then the model's own (its model
    card's clip skip), then the server's. A value of None counts as not set.
    """
    merged: dict[str, Any] = {}
    for layer in (server, model or {}, user, pasted or {}, flags, explicit):
        merged.update((key, value) for key, value in layer.items() if value is not None)
    return merged
